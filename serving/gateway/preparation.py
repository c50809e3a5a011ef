"""Validation, routing and the context check: everything decided before admission.

:meth:`Preparation.prepare` validates the body, routes it (the routing table, the
deployments' live state: this process's copy, refreshed by every admission's round trip and at
most ``SWITCHYARD_LIVE_STATE_SECONDS`` old; and, when a rule asks for it, the prompt's task
class), reckons the output tokens to reserve and builds the upstream body. A prompt that
surely does not fit the deployment's window is only noted (``call.context_error``): it is
refused after admission, so floods of oversized prompts count against the tenant's limits like
any other request.
"""

from __future__ import annotations

import asyncio

from django.conf import settings

from serving.gateway.call import Call
from serving.gateway.errors import invalid
from serving.gateway.validation import (
    capabilities_needed,
    max_output_tokens,
    output_cap,
    sequences,
    unknown_params,
    validate,
)
from serving.routing.classifier import task_classifier
from serving.routing.health import DeploymentHealth
from serving.routing.router import Router
from serving.routing.table import RouteContext, RoutingTable, arouting_table


class Preparation:
    """One per gateway: the router and the deployments' live state it routes by."""

    def __init__(self, router: Router, health: DeploymentHealth) -> None:
        self.router = router
        self.health = health

    async def prepare(self, call: Call) -> None:
        """Validate, then load what routing needs without blocking the loop (the cached
        routing table, the live state in one Redis call, the task class on a worker thread
        when a rule asks for it), then :meth:`plan`."""
        validate(call.endpoint, call.body, pass_unknown=call.tier.pass_unknown_params)
        table = await arouting_table()
        call.live = await self.health.live(
            table.deployment_names, settings.SWITCHYARD_LIVE_STATE_SECONDS
        )
        if table.needs_task_class and call.api.generates and call.task_class is None:
            text = call.api.classifier_text(call.body)
            call.task_class, _ = await asyncio.to_thread(task_classifier().classify, text)
        self.plan(call, table)

    def plan(self, call: Call, table: RoutingTable) -> None:
        """Route the validated body and check the context (no I/O apart from cached tables).
        Content screening (blocklist, PII) comes after admission (serving.gateway.screening)."""
        call.prompt_estimate = call.api.estimate_prompt_tokens(call.body)
        if call.api.generates:
            call.requested_output = max_output_tokens(call.body)
        self._route(call, table)
        # A null optional field is an absent one (OpenAI's semantics): never forwarded.
        body = {k: v for k, v in call.body.items() if v is not None}
        body["model"] = call.route.target.upstream_model
        if call.api.generates:
            self._reckon_output(call)
        else:
            call.max_output = 0
        if call.stream:
            body["stream_options"] = {"include_usage": True}
        call.upstream_body = body

    def _route(self, call: Call, table: RoutingTable) -> None:
        tier = call.tier
        ctx = RouteContext(
            tier_id=tier.pk,
            tenant_id=call.auth.tenant.pk,
            requested=call.body["model"],
            prompt_tokens=call.prompt_estimate,
            task_class=call.task_class,
            metadata=call.body.get("metadata") or {},
        )
        call.route = self.router.route(
            tier,
            call.body["model"],
            table,
            ctx=ctx,
            live=call.live,
            max_output=call.requested_output or call.api.expected_output,
            max_cost=call.max_cost,
            needs=capabilities_needed(call.endpoint, call.body),
            unknown=unknown_params(call.endpoint, call.body),
        )

    @staticmethod
    def _reckon_output(call: Call) -> None:
        """The output tokens to reserve, and whether the prompt surely overflows the window."""
        window = call.route.target.context_window
        # The estimate is generous (for reservations); refuse here only what surely does
        # not fit (at ~5 bytes a token), and leave the exact check to the upstream.
        floor = call.prompt_estimate * 3 // 5
        room = max(window - floor, 0)
        if call.requested_output is not None:
            call.max_output = call.requested_output
            needed = floor + (output_cap(call.body) or 0)
        else:
            # No max_tokens: the model stops naturally. Reserve what it may produce: the
            # tier's cap, bounded by the room the context window leaves.
            cap = call.tier.max_output_tokens or room
            call.max_output = min(cap, room) * sequences(call.body)
            needed = floor + 1
        if needed > window:
            # Raised after admission (Gateway.begin): an oversized prompt counts against the
            # tenant's request limit like any other, so floods of them are throttled.
            call.context_error = invalid(
                f"This model's maximum context length is {window} tokens; you asked for "
                f"about {floor} prompt tokens plus "
                f"{max(needed - floor, 1)} completion tokens.",
                call.api.prompt_key,
                code="context_length_exceeded",
            )
