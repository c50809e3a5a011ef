"""Prometheus metrics of the gateway (process-local registry, served at /metrics)."""

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "switchyard_gateway_requests",
    "Gateway requests by tenant, model, endpoint and HTTP status.",
    ["tenant", "model", "endpoint", "status"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "switchyard_gateway_rejections",
    "Requests refused before reaching a model, by reason.",
    ["reason"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "switchyard_gateway_tokens",
    "Tokens metered, by tenant, model and kind (input/output).",
    ["tenant", "model", "kind"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "switchyard_gateway_request_latency_seconds",
    "End-to-end request latency through the gateway.",
    ["model", "endpoint"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
TTFT = Histogram(
    "switchyard_gateway_time_to_first_token_seconds",
    "Time to the first streamed token through the gateway.",
    ["model"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
