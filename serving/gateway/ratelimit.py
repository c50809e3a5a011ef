"""Per-tenant rate limits in Redis: one Lua script, atomic, exact across gateway replicas.

Limits (from the tenant's tier): requests per minute, tokens per minute and tokens per UTC day
(fixed windows, so the count is exact and the reset time is known), and concurrent requests
(a sorted set of in-flight request ids scored by start time, so a crashed replica's entries
age out after ``INFLIGHT_TTL`` seconds instead of leaking a slot forever).

Tokens are reserved before the call (prompt estimate + max output) and settled afterwards to
the real count, in the same windows they were reserved in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

INFLIGHT_TTL = 900

# KEYS: req_window, tok_window, day_window, inflight
# ARGV: rpm, tpm, tpd, max_conc, tokens, now, request_id, minute_ttl, day_ttl, inflight_ttl
_RESERVE = """
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local tpd, maxc = tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, now = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[10]))
local req = tonumber(redis.call('GET', KEYS[1]) or '0')
local tok = tonumber(redis.call('GET', KEYS[2]) or '0')
local day = tonumber(redis.call('GET', KEYS[3]) or '0')
local conc = redis.call('ZCARD', KEYS[4])
if req + 1 > rpm then return {0, 'requests', req, tok, day, conc} end
if tok + tokens > tpm then return {0, 'tokens', req, tok, day, conc} end
if day + tokens > tpd then return {0, 'tokens_per_day', req, tok, day, conc} end
if conc + 1 > maxc then return {0, 'concurrency', req, tok, day, conc} end
req = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[8])
tok = redis.call('INCRBY', KEYS[2], tokens)
redis.call('EXPIRE', KEYS[2], ARGV[8])
day = redis.call('INCRBY', KEYS[3], tokens)
redis.call('EXPIRE', KEYS[3], ARGV[9])
redis.call('ZADD', KEYS[4], now, ARGV[7])
redis.call('EXPIRE', KEYS[4], ARGV[10])
return {1, 'ok', req, tok, day, conc + 1}
"""

# KEYS: tok_window, day_window, inflight; ARGV: delta, request_id
_SETTLE = """
local delta = tonumber(ARGV[1])
if delta ~= 0 then
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], delta) end
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCRBY', KEYS[2], delta) end
end
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int
    tokens_per_minute: int
    tokens_per_day: int
    max_concurrent: int


@dataclass
class Reservation:
    """What was reserved for one request; pass it back to :meth:`RateLimiter.settle`."""

    request_id: str
    tokens: int
    keys: tuple[str, str, str]
    headers: dict[str, str]
    settled: bool = False


class RateLimited(Exception):
    def __init__(self, reason: str, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.headers = headers


def _duration(seconds: float) -> str:
    """OpenAI's reset format: '1s', '6m0s', '1h2m3s'."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


class RateLimiter:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "sy:rl") -> None:
        self.redis = client
        self.prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def _keys(self, tenant_id: int, now: float) -> tuple[str, str, str, str]:
        minute = int(now // 60)
        day = int(now // 86400)
        p = f"{self.prefix}:{tenant_id}"
        return f"{p}:r:{minute}", f"{p}:t:{minute}", f"{p}:d:{day}", f"{p}:inflight"

    def _call(self, tenant_id: int, limits: Limits, tokens: int, request_id: str):
        now = time.time()
        keys = self._keys(tenant_id, now)
        args = [
            limits.requests_per_minute,
            limits.tokens_per_minute,
            limits.tokens_per_day,
            limits.max_concurrent,
            tokens,
            now,
            request_id,
            120,
            2 * 86400,
            INFLIGHT_TTL,
        ]
        return now, keys, args

    async def reserve(
        self, *, tenant_id: int, limits: Limits, tokens: int, request_id: str
    ) -> Reservation:
        """Reserve one request and ``tokens`` tokens, or raise :class:`RateLimited`."""
        now, keys, args = self._call(tenant_id, limits, tokens, request_id)
        result = await self._reserve(keys=list(keys), args=args)
        return self.outcome(result, now=now, keys=keys, limits=limits, tokens=tokens,
                            request_id=request_id)  # fmt: skip

    def queue_reserve(
        self, pipe: Any, *, tenant_id: int, limits: Limits, tokens: int, request_id: str
    ):
        """Queue the reservation on ``pipe`` (EVAL: no SCRIPT EXISTS round trip); returns
        what :meth:`outcome` needs besides the script's answer."""
        now, keys, args = self._call(tenant_id, limits, tokens, request_id)
        pipe.eval(_RESERVE, len(keys), *keys, *args)
        return {"now": now, "keys": keys, "limits": limits, "tokens": tokens,
                "request_id": request_id}  # fmt: skip

    def outcome(
        self,
        result: list,
        *,
        now: float,
        keys: tuple[str, str, str, str],
        limits: Limits,
        tokens: int,
        request_id: str,
    ) -> Reservation:
        """The reservation the script made, or raise :class:`RateLimited`."""
        allowed, reason, req, tok, day, _conc = result
        reason = reason.decode() if isinstance(reason, bytes) else reason
        to_minute = 60 - (now % 60)
        to_day = 86400 - (now % 86400)
        headers = {
            "x-ratelimit-limit-requests": str(limits.requests_per_minute),
            "x-ratelimit-limit-tokens": str(limits.tokens_per_minute),
            "x-ratelimit-remaining-requests": str(max(0, limits.requests_per_minute - int(req))),
            "x-ratelimit-remaining-tokens": str(max(0, limits.tokens_per_minute - int(tok))),
            "x-ratelimit-reset-requests": _duration(to_minute),
            "x-ratelimit-reset-tokens": _duration(to_minute),
        }
        if not allowed:
            if reason == "tokens" and tokens > limits.tokens_per_minute:
                reason = "request_too_large"
            retry = {
                "requests": to_minute,
                "tokens": to_minute,
                "tokens_per_day": to_day,
                "concurrency": 1,
                "request_too_large": to_minute,
            }[reason]
            headers["retry-after"] = str(max(1, int(retry + 0.999)))
            raise RateLimited(reason, int(headers["retry-after"]), headers)
        return Reservation(request_id, tokens, (keys[1], keys[2], keys[3]), headers)

    async def settle(
        self, reservation: Reservation, *, actual_tokens: int, pipe: Any = None
    ) -> None:
        """Replace the reserved token count by ``actual_tokens`` and free the concurrency slot.
        Safe to call twice (the second call does nothing). With ``pipe`` (a Redis pipeline)
        the call is queued there, to go with the caller's other writes in one round trip."""
        if reservation.settled:
            return
        reservation.settled = True
        keys = list(reservation.keys)
        args = [actual_tokens - reservation.tokens, reservation.request_id]
        if pipe is not None:
            # EVAL, not EVALSHA: a pipeline that holds registered scripts costs an extra
            # SCRIPT EXISTS round trip on every execute (redis-py); the body is small.
            pipe.eval(_SETTLE, len(keys), *keys, *args)
            return
        await self._settle(keys=keys, args=args)
