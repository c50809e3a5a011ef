"""Prometheus metrics of the gateway, served at /metrics.

One process (``WEB_WORKERS=1``, no ``PROMETHEUS_MULTIPROC_DIR``): the metrics live in
:data:`REGISTRY`, which also holds the collectors read at scrape time (stream lengths from
Redis, :mod:`switchyard.streams`).

Several uvicorn workers: ``make run`` sets ``PROMETHEUS_MULTIPROC_DIR`` for the web processes
(an empty folder under the data dir), so prometheus_client keeps every counter and histogram
in a memory-mapped file per process and :func:`render` adds up all the processes' files
(``MultiProcessCollector``), whichever worker answers the scrape. The scrape-time collectors
stay in :data:`REGISTRY` and run once per scrape, so their figures (read from Redis) are not
multiplied by the number of workers. A worker that exits cleanly is marked dead
(``mark_process_dead``, for live gauges); its counters stay in the sums, as counters must.

Tenant labels are bounded: :func:`tenant_label` names at most ``METRICS_TENANT_LABELS``
tenants, the first that many to be served (shared by every gateway process through Redis),
and calls every other tenant ``other``.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis
from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Live metrics (below) and scrape-time collectors (switchyard.streams.register_metrics); in
# multiprocess mode only the latter, the live metrics being read back from the files.
REGISTRY = CollectorRegistry(auto_describe=True)


def multiprocess_dir() -> str:
    """The multiprocess folder when this process runs in prometheus_client's multiprocess
    mode, else ``""``."""
    return os.environ.get(MULTIPROC_ENV, "")


if multiprocess_dir():
    # Whoever starts the workers empties it (``make run``); here it only has to exist.
    os.makedirs(multiprocess_dir(), exist_ok=True)
_LIVE = None if multiprocess_dir() else REGISTRY

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "switchyard_gateway_requests",
    "Gateway requests by tenant (bounded, see tenant_label), model, endpoint and HTTP status.",
    ["tenant", "model", "endpoint", "status"],
    registry=_LIVE,
)
REJECTIONS = Counter(
    "switchyard_gateway_rejections",
    "Requests refused before reaching a model, by reason.",
    ["reason"],
    registry=_LIVE,
)
TOKENS = Counter(
    "switchyard_gateway_tokens",
    "Tokens metered, by tenant (bounded), model and kind (input/output).",
    ["tenant", "model", "kind"],
    registry=_LIVE,
)
LATENCY = Histogram(
    "switchyard_gateway_request_latency_seconds",
    "End-to-end request latency through the gateway.",
    ["model", "endpoint"],
    buckets=_BUCKETS,
    registry=_LIVE,
)
TENANT_LATENCY = Histogram(
    "switchyard_gateway_tenant_request_latency_seconds",
    "End-to-end request latency by tenant: the first METRICS_TENANT_LABELS tenants served "
    "by name, every other tenant as 'other'.",
    ["tenant"],
    buckets=_BUCKETS,
    registry=_LIVE,
)
TTFT = Histogram(
    "switchyard_gateway_time_to_first_token_seconds",
    "Time to the first streamed token through the gateway.",
    ["model"],
    buckets=_BUCKETS,
    registry=_LIVE,
)

if multiprocess_dir():
    atexit.register(mark_process_dead, os.getpid())


class _Scrape:
    """What one scrape reads: every process's live metrics plus the scrape-time collectors."""

    def __init__(self, path: str) -> None:
        self.files = CollectorRegistry()
        MultiProcessCollector(self.files, path=path)

    def collect(self) -> Iterable[Metric]:
        yield from self.files.collect()
        yield from REGISTRY.collect()


def render() -> bytes:
    """The Prometheus text of this gateway: of all its worker processes in multiprocess mode,
    of this process otherwise."""
    path = multiprocess_dir()
    return generate_latest(_Scrape(path) if path else REGISTRY)


# ---- bounded tenant labels -------------------------------------------------------------------

OTHER = "other"
TENANT_LABELS_KEY = "sy:metrics:tenants"
# Admits a tenant to the named set while it has room; 1 when the tenant is (now) named.
_ADMIT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('SADD', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
_decided: dict[str, str] = {}
_DECIDED_MAX = 100_000


async def tenant_label(client: aioredis.Redis, slug: str) -> str:
    """The ``tenant`` label for ``slug``: the slug itself when it is among the first
    ``METRICS_TENANT_LABELS`` tenants served (a Redis set shared by all gateway processes;
    delete ``sy:metrics:tenants`` to start over), ``other`` otherwise. Each process asks
    Redis once per tenant; if Redis cannot answer, ``other`` (not remembered)."""
    label = _decided.get(slug)
    if label is not None:
        return label
    limit = settings.METRICS_TENANT_LABELS
    if limit <= 0:
        return OTHER
    try:
        named = await client.eval(_ADMIT, 1, TENANT_LABELS_KEY, slug, limit)
    except redis.RedisError:
        return OTHER
    if len(_decided) >= _DECIDED_MAX:
        _decided.clear()
    label = _decided[slug] = slug if int(named) else OTHER
    return label


def forget_tenant_labels() -> None:
    """Drop this process's remembered label decisions (tests)."""
    _decided.clear()


async def record_finished(
    client: aioredis.Redis,
    *,
    tenant: str,
    model: str,
    endpoint: str,
    status: int,
    latency: float,
    ttft: float | None,
    tokens: tuple[int, int] | None,
) -> None:
    """Count a finished request: status, latencies and, when it produced, its tokens."""
    label = await tenant_label(client, tenant)
    REQUESTS.labels(label, model, endpoint, str(status)).inc()
    LATENCY.labels(model, endpoint).observe(latency)
    TENANT_LATENCY.labels(label).observe(latency)
    if ttft is not None:
        TTFT.labels(model).observe(ttft)
    if tokens is not None:
        TOKENS.labels(label, model, "input").inc(tokens[0])
        TOKENS.labels(label, model, "output").inc(tokens[1])


async def record_refused(
    client: aioredis.Redis, *, tenant: str, model: str, endpoint: str, status: int
) -> None:
    """Count a request refused before any reservation."""
    label = await tenant_label(client, tenant)
    REQUESTS.labels(label, model, endpoint, str(status)).inc()
