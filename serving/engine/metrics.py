"""The worker's Prometheus metrics: latency histograms and finish counters it observes, and the
engine's numbers (queue, KV pool, prefix cache, token totals) read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from serving.engine.engine import AsyncEngine

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    """One worker's registry (``registry``, served at ``/metrics``).

    ``engine`` returns the engine once it is ready (None while loading: no engine gauges)."""

    def __init__(self, engine: Callable[[], AsyncEngine | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.engine = engine
        r = self.registry
        self.ttft = Histogram(
            "switchyard_time_to_first_token_seconds",
            "Time to first token.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "switchyard_inter_token_latency_seconds",
            "Time between tokens.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "switchyard_e2e_request_latency_seconds",
            "Request latency.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "switchyard_requests", "Finished requests by reason.", ["finish_reason"], registry=r
        )
        r.register(self)

    def collect(self) -> Iterator[Metric]:
        engine = self.engine()
        if engine is None:  # still loading
            return
        s = engine.stats()
        for name, doc, value in (
            ("switchyard_num_requests_running", "Sequences running.", s.running),
            ("switchyard_num_requests_waiting", "Sequences waiting.", s.waiting),
            ("switchyard_kv_cache_usage_perc", "KV blocks in use (0-1).", s.kv_usage),
            ("switchyard_prefix_cache_hit_rate", "Prompt blocks found cached.", s.prefix_hit_rate),
            ("switchyard_kv_cache_blocks_total", "KV blocks in the pool.", s.kv_blocks_total),
            ("switchyard_prompt_tokens_total", "Prompt tokens computed.", s.prompt_tokens_total),
            ("switchyard_generation_tokens_total", "Tokens generated.", s.generation_tokens_total),
            ("switchyard_num_preemptions_total", "Sequences preempted.", s.preemptions_total),
            ("switchyard_failed_requests_total", "Requests ended by an error.", s.failed_total),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g

    def describe(self) -> list[Metric]:
        return []
