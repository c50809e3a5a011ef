"""One request as it moves through the gateway's stages: :class:`Call`.

A plain record: the stages (serving/gateway), routing's failover and the cache stage read and
fill it; it imports none of them.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from billing.ledger import BudgetReservation
from billing.pricing import Price
from serving.gateway.endpoints import Endpoint
from serving.gateway.errors import GatewayError
from serving.gateway.ratelimit import Reservation
from serving.routing.health import LiveState
from serving.routing.router import Route
from tenants.auth import AuthContext

# Characters of a client's own request id kept as its label.
CLIENT_REQUEST_ID_CHARS = 128


def clean_label(value: str, limit: int) -> str:
    """A client-supplied label fit to log and echo: printable characters only, bounded."""
    value = value[: limit * 4]
    return "".join(ch for ch in value if ch.isprintable())[:limit]


@dataclass
class Call:
    """Everything about one request as it moves through the pipeline."""

    api: Endpoint  # the endpoint called; its name is ``endpoint``
    body: dict[str, Any]
    auth: AuthContext
    # Always minted here: it keys the usage record and the request log. A client's own
    # X-Request-Id is only a label (client_request_id), never an identity.
    request_id: str = field(default_factory=lambda: f"req_{uuid.uuid4().hex}")
    client_request_id: str = ""
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started: float = field(default_factory=time.perf_counter)
    route: Route | None = None
    live: LiveState | None = None
    task_class: str | None = None
    max_cost: int | None = None  # the caller's per-request budget, micro-dollars
    upstream_body: dict[str, Any] = field(default_factory=dict)
    prompt_estimate: int = 0
    max_output: int = 0  # output tokens reserved (the client's cap, else the tier's or window)
    requested_output: int | None = None  # the client's max_tokens × n, if it sent one
    price: Price | None = None
    limit_reservation: Reservation | None = None
    budget_reservation: BudgetReservation | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    status: int = 200
    error_code: str = ""
    ttft: float | None = None
    cache: str = "miss"
    cache_control: str = ""
    cache_plan: Any = None
    cache_planned: bool = False  # cache_plan is decided (CacheStage plans once per call)
    cache_keep: dict[str, Any] | None = None  # a miss's answer to store (CacheStage.keep)
    response_for_log: dict[str, Any] | None = None
    admitted: bool = False
    context_error: GatewayError | None = None
    finished: bool = False
    # The deployment whose in-flight slot this call holds (taken at admission for the first
    # choice, by failover for others) and, once an attempt there succeeded, its time to first
    # token in ms: the settlement frees the slot and counts the success in its round trip.
    slot: str | None = None
    slot_ok: bool = False
    slot_ttft_ms: float | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint's name, as request logs, usage records and metric labels store it."""
        return self.api.name

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def tier(self):
        return self.auth.tier

    @property
    def prefix_salt(self) -> str:
        """What a model worker salts its prefix cache with: blocks are shared only within one
        tenant, or among the tenants that opted into the shared cache pool."""
        tenant = self.auth.tenant
        return "shared" if tenant.cache_shared_pool else f"t{tenant.pk}"

    def upstream_options(self) -> dict[str, Any]:
        """What the upstream call says about the request besides its body: its id (to abort
        it), the tenant and its fairness weight (a worker's scheduler), the prefix salt."""
        return {
            "request_id": self.request_id,
            "tenant": self.auth.tenant.slug,
            "weight": self.tier.fairness_weight,
            "salt": self.prefix_salt,
        }

    def headers(self) -> dict[str, str]:
        h = {"x-request-id": self.request_id, "x-switchyard-cache": self.cache}
        if self.client_request_id:
            h["x-client-request-id"] = self.client_request_id
        if self.route:
            h["x-switchyard-route"] = self.route.header()
        if self.limit_reservation:
            h.update(self.limit_reservation.headers)
        return h
