"""A lean closed-loop HTTP/1.1 load generator (asyncio streams, keep-alive, no client library).

Client libraries cost more CPU per request than the proxies under test; this one parses just
enough HTTP (status line, Content-Length or chunked bodies) to time each request, so one core
drives thousands of requests a second. ``concurrency`` connections each send a request, read
the whole response, and send the next, for ``duration`` seconds after a ``warmup``. A body
containing ``__UNIQUE__`` gets a never-repeated number there in every request (cache misses).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, whole response
    first_byte: list[float] = field(default_factory=list)  # seconds, first body bytes
    errors: dict[int, int] = field(default_factory=dict)  # status (0: connection) → count
    warm_ok: int = 0  # successes outside the recorded window (warm-up, after the deadline)
    elapsed: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float, values: list[float] | None = None) -> float:
        values = sorted(self.latencies if values is None else values)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q / 100 * len(values)))]

    def summary(self) -> dict[str, float]:
        return {
            "rps": self.rps,
            "p50_ms": 1e3 * self.pct(50),
            "p99_ms": 1e3 * self.pct(99),
            "mean_ms": 1e3 * statistics.fmean(self.latencies) if self.latencies else float("nan"),
            "errors": sum(self.errors.values()),
        }


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> float | None:
    """Read the body; returns the time its first bytes arrived."""
    first: float | None = None
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if first is None:
                first = time.perf_counter()
            if size == 0:
                await reader.readline()  # the empty line after the last chunk
                return first
            await reader.readexactly(size + 2)
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
        first = time.perf_counter()
    return first


UNIQUE = b"__UNIQUE__"
_counter = iter(range(1, 1 << 62))


def _unique_request(parts, headers: dict[str, str], body: bytes) -> bytes:
    """The request with ``__UNIQUE__`` in its body replaced by a number never sent before."""
    filled = body.replace(UNIQUE, f"{next(_counter)}-{time.time_ns()}".encode())
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + f"Content-Type: application/json\r\nContent-Length: {len(filled)}\r\n\r\n"
    ).encode()
    return head + filled


async def _worker(
    url: str,
    body: bytes,
    headers: dict[str, str],
    stop_at: float,
    record_from: float,
    result: Result,
) -> None:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body
    unique = UNIQUE in body
    reader = writer = None
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            if unique:  # a prompt no request before had: every cache lookup misses
                request = _unique_request(parts, headers, body)
            t0 = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            resp_headers: dict[str, str] = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                resp_headers[k.strip().lower()] = v.strip()
            first = await _read_body(reader, resp_headers)
            t1 = time.perf_counter()
            if record_from <= t1 <= stop_at:
                if status == 200:
                    result.latencies.append(t1 - t0)
                    result.first_byte.append((first or t1) - t0)
                else:
                    result.errors[status] = result.errors.get(status, 0) + 1
            elif status == 200:
                result.warm_ok += 1
            if resp_headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
            result.errors[0] = result.errors.get(0, 0) + 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def run_load(
    url: str,
    payload: dict,
    *,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
) -> Result:
    """Closed loop: ``concurrency`` connections for ``warmup + duration`` seconds; requests
    that complete inside the window after the warm-up are recorded (whenever they started, so
    a proxy slower than the window still shows its throughput)."""
    body = json.dumps(payload).encode()
    result = Result()
    start = time.perf_counter()
    record_from = start + warmup
    stop_at = record_from + duration
    await asyncio.gather(
        *(_worker(url, body, headers, stop_at, record_from, result) for _ in range(concurrency))
    )
    result.elapsed = max(1e-9, min(time.perf_counter(), stop_at) - record_from)
    return result


def load(url: str, payload: dict, **kw) -> Result:
    try:
        import uvloop

        return uvloop.run(run_load(url, payload, **kw))
    except ImportError:
        return asyncio.run(run_load(url, payload, **kw))
