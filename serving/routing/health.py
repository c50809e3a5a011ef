"""Live deployment state in Redis, shared by every gateway replica and the health checker.

Per deployment:

- ``sy:dep:{name}:inflight``: a sorted set of in-flight request ids scored by start time
  (least-connections and power-of-two read its size; entries of a crashed replica age out
  after ``INFLIGHT_TTL`` seconds instead of leaking forever);
- ``sy:dep:{name}``: a hash with ``ewma_ms`` (time to first token, exponentially weighted),
  ``fails`` (consecutive failures), ``level`` (cooldowns in a row), ``cooldown_until`` (unix
  seconds), ``last_error`` and ``last_ok``.

Every update is one Lua script, so concurrent replicas never lose one. Passive health: a
connect error puts a deployment in cooldown at once; timeouts, 5xx and 429 after
``COOLDOWN_FAILURES`` in a row. Each further cooldown in a row doubles (``COOLDOWN_BASE`` up
to ``COOLDOWN_MAX`` seconds). One success, from a request or from the active check, clears it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

INFLIGHT_TTL = 900
EWMA_ALPHA = 0.3

# KEYS: none; ARGV: now, inflight_ttl, name1, name2, ...
_SNAPSHOT = """
local out = {}
local now = tonumber(ARGV[1])
for i = 3, #ARGV do
  local k = 'sy:dep:' .. ARGV[i]
  redis.call('ZREMRANGEBYSCORE', k .. ':inflight', '-inf', now - tonumber(ARGV[2]))
  local h = redis.call('HMGET', k, 'ewma_ms', 'fails', 'cooldown_until', 'last_error', 'level')
  out[#out + 1] = redis.call('ZCARD', k .. ':inflight')
  out[#out + 1] = h[1] or ''
  out[#out + 1] = h[2] or '0'
  out[#out + 1] = h[3] or '0'
  out[#out + 1] = h[4] or ''
  out[#out + 1] = h[5] or '0'
end
return out
"""

# KEYS: hash; ARGV: now, ttft_ms ('' when not measured), alpha
_SUCCESS = """
if ARGV[2] ~= '' then
  local old = redis.call('HGET', KEYS[1], 'ewma_ms')
  local v = tonumber(ARGV[2])
  if old then v = tonumber(ARGV[3]) * v + (1 - tonumber(ARGV[3])) * tonumber(old) end
  redis.call('HSET', KEYS[1], 'ewma_ms', tostring(v))
end
redis.call('HSET', KEYS[1], 'fails', 0, 'level', 0, 'cooldown_until', 0, 'last_ok', ARGV[1])
return 1
"""

# KEYS: hash; ARGV: now, reason, immediate (1/0), threshold, base, max
# Returns the cooldown started in seconds (0 when none started).
_FAILURE = """
local now = tonumber(ARGV[1])
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[2])
local until_ = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until') or '0')
if now < until_ then return 0 end
if ARGV[3] == '1' or fails >= tonumber(ARGV[4]) then
  local level = redis.call('HINCRBY', KEYS[1], 'level', 1)
  local secs = math.min(tonumber(ARGV[5]) * 2 ^ (level - 1), tonumber(ARGV[6]))
  redis.call('HSET', KEYS[1], 'cooldown_until', tostring(now + secs))
  return tostring(secs)
end
return 0
"""


# One attempt's end: free its in-flight slot and record its outcome, in one round trip.
# KEYS: hash, inflight; ARGV: request_id, outcome ('ok' / 'fail' / '' for neither), then the
# _SUCCESS or _FAILURE arguments.
_FINISH = (
    """
redis.call('ZREM', KEYS[2], ARGV[1])
local outcome = ARGV[2]
for i = 1, #ARGV - 2 do ARGV[i] = ARGV[i + 2] end
ARGV[#ARGV] = nil
ARGV[#ARGV] = nil
if outcome == 'ok' then
"""
    + _SUCCESS
    + """
elseif outcome == 'fail' then
"""
    + _FAILURE
    + """
end
return 0
"""
)


def _key(name: str) -> str:
    return f"sy:dep:{name}"


@dataclass(frozen=True)
class DeploymentState:
    inflight: int = 0
    ewma_ms: float | None = None
    fails: int = 0
    cooldown_until: float = 0.0
    last_error: str = ""
    level: int = 0

    def cooling(self, now: float | None = None) -> bool:
        return (now or time.time()) < self.cooldown_until

    def status(self, now: float | None = None) -> str:
        now = now or time.time()
        if self.cooling(now):
            return "cooldown"
        if self.fails:
            return "failing"
        return "healthy"


LiveState = dict[str, DeploymentState]


def _parse(names: list[str], flat: list) -> LiveState:
    out: LiveState = {}
    for i, name in enumerate(names):
        inflight, ewma, fails, until, err, level = flat[i * 6 : i * 6 + 6]
        ewma = ewma.decode() if isinstance(ewma, bytes) else ewma
        err = err.decode() if isinstance(err, bytes) else err
        out[name] = DeploymentState(
            inflight=int(inflight),
            ewma_ms=float(ewma) if ewma else None,
            fails=int(fails),
            cooldown_until=float(until),
            last_error=err or "",
            level=int(level),
        )
    return out


def _failure_args(reason: str, immediate: bool) -> list:
    return [
        time.time(),
        reason[:200],
        "1" if immediate else "0",
        settings.SWITCHYARD_COOLDOWN_FAILURES,
        settings.SWITCHYARD_COOLDOWN_SECONDS,
        settings.SWITCHYARD_COOLDOWN_MAX_SECONDS,
    ]


def _finish_args(ok: bool | None, ttft_ms: float | None, reason: str, immediate: bool) -> list:
    if ok:
        return ["ok", time.time(), "" if ttft_ms is None else f"{ttft_ms:.3f}", EWMA_ALPHA]
    if ok is None:
        return [""]
    return ["fail", *_failure_args(reason, immediate)]


class DeploymentHealth:
    """The gateway's async view of the live state (one per event loop, like the limiter)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._snapshot = client.register_script(_SNAPSHOT)
        self._success = client.register_script(_SUCCESS)
        self._failure = client.register_script(_FAILURE)
        self._finish = client.register_script(_FINISH)
        # Routing's copy of the live state: (names, state, monotonic time read, this process's
        # in-flight counts then). Routing adds this process's own changes since (``_local``).
        self._view: tuple[list[str], LiveState, float, dict[str, int]] | None = None
        self._local: dict[str, int] = {}

    async def snapshot(self, names: list[str]) -> LiveState:
        """In-flight counts, latency and cooldowns of ``names``, in one round trip."""
        if not names:
            return {}
        flat = await self._snapshot(keys=[], args=[time.time(), INFLIGHT_TTL, *names])
        state = _parse(names, flat)
        self._remember(names, state)
        return state

    async def live(self, names: list[str], max_age: float) -> LiveState:
        """The live state of ``names`` at most ``max_age`` seconds old: this process's last
        snapshot (every admission refreshes it, :meth:`queue_refresh`) with the slots this
        process took and freed since, else a fresh snapshot."""
        view = self._view
        if max_age <= 0 or view is None or view[0] != names or time.monotonic() - view[2] > max_age:
            return await self.snapshot(names)
        _, state, _, then = view
        local = self._local
        changed = [n for n in names if local.get(n, 0) != then.get(n, 0)]
        if not changed:
            return state
        state = dict(state)
        for n in changed:
            inflight = state[n].inflight + local.get(n, 0) - then.get(n, 0)
            state[n] = dataclasses.replace(state[n], inflight=max(0, inflight))
        return state

    def queue_refresh(self, pipe: Any) -> Callable[[Any], None] | None:
        """Queue a snapshot of the deployments last read on ``pipe`` (admission's round trip):
        routing's copy stays as fresh as the last request. Returns what takes the result."""
        view = self._view
        if view is None or not view[0]:
            return None
        names = view[0]
        pipe.eval(_SNAPSHOT, 0, time.time(), INFLIGHT_TTL, *names)
        return lambda flat: self._remember(names, _parse(names, flat))

    def _remember(self, names: list[str], state: LiveState) -> None:
        self._view = (names, state, time.monotonic(), dict(self._local))

    def forget(self) -> None:
        """Drop the process's copy: the next routing reads Redis (after a failure here)."""
        self._view = None

    def took(self, name: str) -> None:
        """This process took a slot of ``name`` (counted by routing until the next snapshot)."""
        self._local[name] = self._local.get(name, 0) + 1

    def freed(self, name: str) -> None:
        """This process freed a slot of ``name``."""
        self._local[name] = self._local.get(name, 0) - 1

    async def acquire(self, name: str, request_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        self.queue_acquire(pipe, name, request_id)
        await pipe.execute()
        self.took(name)

    @staticmethod
    def queue_acquire(pipe: Any, name: str, request_id: str) -> None:
        """Queue taking an in-flight slot of ``name`` on ``pipe`` (admission's round trip
        takes the first choice's slot); call :meth:`took` once it ran."""
        k = f"{_key(name)}:inflight"
        pipe.zadd(k, {request_id: time.time()})
        pipe.expire(k, INFLIGHT_TTL)

    async def release(self, name: str, request_id: str) -> None:
        await self.redis.zrem(f"{_key(name)}:inflight", request_id)
        self.freed(name)

    async def finish(
        self,
        name: str,
        request_id: str,
        *,
        ok: bool | None,
        ttft_ms: float | None = None,
        reason: str = "",
        immediate: bool = False,
    ) -> float:
        """End one attempt in one round trip: free its in-flight slot and count a success
        (``ok``), a failure (``not ok``) or neither (``None``, e.g. the caller's own 400).
        Returns the cooldown a failure started, in seconds (0 if none)."""
        args = _finish_args(ok, ttft_ms, reason, immediate)
        if ok is False:
            self.forget()  # this process's next request routes by the failure
        out = await self._finish(keys=[_key(name), f"{_key(name)}:inflight"],
                                 args=[request_id, *args])  # fmt: skip
        self.freed(name)
        return float(out)

    @staticmethod
    def queue_finish(
        pipe: Any, name: str, request_id: str, *, ok: bool | None, ttft_ms: float | None = None
    ) -> None:
        """Queue :meth:`finish` of a success (or, ``ok`` None, only the slot's release) on
        ``pipe``: the settlement's transaction carries it (EVAL: no SCRIPT EXISTS trip); call
        :meth:`freed` once it ran."""
        args = _finish_args(ok, ttft_ms, "", False)
        pipe.eval(_FINISH, 2, _key(name), f"{_key(name)}:inflight", request_id, *args)

    async def success(self, name: str, ttft_ms: float | None) -> None:
        ttft = "" if ttft_ms is None else f"{ttft_ms:.3f}"
        await self._success(keys=[_key(name)], args=[time.time(), ttft, EWMA_ALPHA])

    async def failure(self, name: str, reason: str, *, immediate: bool = False) -> float:
        """Count a failure; returns the cooldown it started, in seconds (0 if none)."""
        self.forget()
        secs = await self._failure(keys=[_key(name)], args=_failure_args(reason, immediate))
        return float(secs)


class DeploymentHealthSync:
    """The same state for the Celery health checker and the console (blocking client)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._snapshot = client.register_script(_SNAPSHOT)
        self._success = client.register_script(_SUCCESS)
        self._failure = client.register_script(_FAILURE)

    def snapshot(self, names: list[str]) -> LiveState:
        if not names:
            return {}
        return _parse(names, self._snapshot(keys=[], args=[time.time(), INFLIGHT_TTL, *names]))

    def success(self, name: str, ttft_ms: float | None = None) -> None:
        ttft = "" if ttft_ms is None else f"{ttft_ms:.3f}"
        self._success(keys=[_key(name)], args=[time.time(), ttft, EWMA_ALPHA])

    def failure(self, name: str, reason: str, *, immediate: bool = False) -> float:
        return float(self._failure(keys=[_key(name)], args=_failure_args(reason, immediate)))
