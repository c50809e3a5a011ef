"""Calls to deployments over one pooled ``httpx.AsyncClient`` per event loop.

Any OpenAI-compatible base URL works (a Switchyard model worker, vLLM, a hosted API). Streams
are passed through chunk by chunk; closing the stream (client gone, cancel) closes the
upstream connection, which makes a Switchyard worker free the sequence. Deployments of kind
``anthropic`` (the Messages API) and ``azure_openai`` (Azure's paths and headers) are called
through :mod:`serving.providers`; callers see OpenAI bodies and chunks either way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from serving.gateway.errors import GatewayError, invalid, upstream_error
from serving.providers import anthropic, azure
from serving.routing.deployments import Target

_clients: dict[int, httpx.AsyncClient] = {}


def client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    c = _clients.get(id(loop))
    if c is None or c.is_closed:
        # httpx's own pool (httpcore) scans every pooled connection on each request, so its
        # CPU per request grows with concurrency; aiohttp's pool under the same httpx API
        # does not (benchmarks/RESULTS.md, "Gateway").
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        c = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits),
            limits=limits,
            timeout=httpx.Timeout(120.0, connect=5.0),
        )
        _clients[id(loop)] = c
    return c


def _timed_out(exc: httpx.HTTPError) -> bool:
    """Whether a transport error was a timeout. The aiohttp transport maps every aiohttp
    connection error (refused, reset, closed mid-stream) to ``httpx.ConnectTimeout``, so the
    original error decides."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError | OSError):
        return isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError)
    return isinstance(exc, httpx.TimeoutException)


def _headers(
    target: Target, request_id: str, tenant: str, weight: float, salt: str = ""
) -> dict[str, str]:
    h = {"content-type": "application/json", "x-request-id": request_id}
    if target.api_key:
        h["authorization"] = f"Bearer {target.api_key}"
    if target.kind == "local_worker":
        h["x-switchyard-tenant"] = tenant
        h["x-switchyard-weight"] = str(weight)
        if salt:
            h["x-switchyard-prefix-salt"] = salt
    return h


def _request(
    target: Target,
    path: str,
    body: dict[str, Any],
    request_id: str,
    tenant: str,
    weight: float,
    salt: str,
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The URL, body and headers of a call to ``target`` for an OpenAI ``path`` and body."""
    if target.kind == "anthropic":
        if path != "/chat/completions":
            raise invalid(
                f"Deployment {target.name} (Anthropic) serves chat completions only.",
                code="unsupported_endpoint",
            )
        return (
            f"{target.base_url}/messages",
            anthropic.to_messages_request(body, target.context_window),
            anthropic.headers(target.api_key, request_id),
        )
    if target.kind == "azure_openai":
        url = azure.url(target.base_url, target.upstream_model, path, target.api_version)
        return url, body, azure.headers(target.api_key, request_id)
    return (
        f"{target.base_url}{path}",
        body,
        _headers(target, request_id, tenant, weight, salt),
    )


# Kinds whose base URL has no ``/health`` next to it: only a completion probes them.
NO_HEALTH_URL = ("anthropic", "azure_openai")


def probe_request(
    *, kind: str, base_url: str, model: str, api_key: str, api_version: str = ""
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """URL, body and headers of a one-token completion in the deployment's own wire format
    (the active health check of an ``anthropic`` or ``azure_openai`` deployment)."""
    target = Target(
        name="health-check",
        model=model,
        upstream_model=model,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key=api_key,
        weight=1,
        max_concurrency=1,
        context_window=8192,
        timeout_seconds=5.0,
        api_version=api_version,
    )
    body = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
    return _request(target, "/chat/completions", body, "health-check", "", 1.0, "")


class UpstreamAuthFailed(GatewayError):
    """The deployment refused the operator's credentials (401/403): the deployment's fault,
    never the tenant's. Its message is the provider's business, not the tenant's."""


class UpstreamLoading(GatewayError):
    """The deployment is starting (a model worker loading its weights): not a failure."""


def _retry_after(value: str | None, default: int = 5) -> int:
    try:
        return max(1, min(int(float(value or default)), 300))
    except (ValueError, OverflowError):
        return default


def _error_from(
    resp_status: int, body: bytes, target: Target, retry_after: str | None = None
) -> GatewayError:
    """Pass the caller's own 4xx through in the OpenAI shape; anything that is the
    deployment's fault becomes a 502/503/504 naming no secrets. The work a Switchyard worker
    reports it did before failing (``usage`` beside the error) rides on ``exc.usage``."""
    exc = _classify(resp_status, body, target, retry_after)
    try:
        usage = json.loads(body).get("usage")
    except (ValueError, AttributeError):
        usage = None
    exc.usage = usage if isinstance(usage, dict) else None
    return exc


def _classify(
    resp_status: int, body: bytes, target: Target, retry_after: str | None
) -> GatewayError:
    try:
        err = json.loads(body)["error"]
        message = str(err.get("message") or "upstream error")
        if not isinstance(err, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError):
        err, message = {}, body[:200].decode(errors="replace") or "upstream error"
    message = message[:500]
    if resp_status in (401, 403, 407):
        return UpstreamAuthFailed(
            502,
            f"Deployment {target.name}: upstream authentication failed. The operator must "
            "check the deployment's credentials.",
            type="api_error",
            code="upstream_auth_failed",
        )
    if resp_status == 503 and err.get("code") == "model_loading":
        secs = _retry_after(retry_after)
        return UpstreamLoading(
            503,
            f"The model behind {target.name} is still loading; retry after {secs} s.",
            type="api_error",
            code="model_loading",
            headers={"Retry-After": str(secs)},
        )
    if 400 <= resp_status < 500 and resp_status != 429:
        return GatewayError(
            resp_status,
            message,
            type=err.get("type") or "invalid_request_error",
            param=err.get("param"),
            code=err.get("code"),
        )
    status = 503 if resp_status == 429 else 502
    return upstream_error(f"Deployment {target.name} failed ({resp_status}): {message}", status)


def _stream_error(data: str, target: Target) -> GatewayError:
    """An ``{"error": …}`` event inside a stream: the request's own fault when the upstream
    says so (``invalid_request_error``), else the deployment's."""
    try:
        err = json.loads(data)["error"]
        kind = err.get("type") if isinstance(err, dict) else None
    except (ValueError, KeyError, TypeError):
        kind = None
    if kind == "invalid_request_error":
        return _error_from(400, data.encode(), target)
    return _error_from(502, data.encode(), target)


async def post_json(
    target: Target,
    path: str,
    body: dict[str, Any],
    *,
    request_id: str,
    tenant: str,
    weight: float,
    salt: str = "",
) -> dict[str, Any]:
    url, payload, headers = _request(target, path, body, request_id, tenant, weight, salt)
    try:
        resp = await client().post(
            url, json=payload, headers=headers, timeout=target.timeout_seconds
        )
    except httpx.HTTPError as exc:
        if _timed_out(exc):
            raise upstream_error(f"Deployment {target.name} timed out.", 504) from exc
        raise upstream_error(f"Deployment {target.name} is unreachable.", 502) from exc
    if resp.status_code != 200:
        raise _error_from(resp.status_code, resp.content, target, resp.headers.get("retry-after"))
    try:
        answer = resp.json()
        if target.kind == "anthropic":
            return anthropic.to_chat_completion(answer, body.get("model", ""))
        return answer
    except (ValueError, TypeError, AttributeError):
        raise upstream_error(f"Deployment {target.name} answered with invalid JSON.") from None


async def stream_chunks(
    target: Target,
    path: str,
    body: dict[str, Any],
    *,
    request_id: str,
    tenant: str,
    weight: float,
    salt: str = "",
) -> AsyncIterator[dict[str, Any]]:
    """Yield each SSE ``data:`` JSON object of an upstream stream until ``[DONE]`` (for an
    Anthropic deployment: its events translated to OpenAI chunks, until ``message_stop``)."""
    url, payload, headers = _request(target, path, body, request_id, tenant, weight, salt)
    req = client().build_request(
        "POST", url, json=payload, headers=headers, timeout=target.timeout_seconds
    )
    translator = (
        anthropic.StreamTranslator(body.get("model", "")) if target.kind == "anthropic" else None
    )
    try:
        resp = await client().send(req, stream=True)
    except httpx.HTTPError as exc:
        if _timed_out(exc):
            raise upstream_error(f"Deployment {target.name} timed out.", 504) from exc
        raise upstream_error(f"Deployment {target.name} is unreachable.", 502) from exc
    try:
        if resp.status_code != 200:
            raise _error_from(
                resp.status_code, await resp.aread(), target, resp.headers.get("retry-after")
            )
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                try:  # orjson refuses NaN/Infinity, which some servers write
                    chunk = json.loads(data)
                except ValueError:
                    continue
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk and "choices" not in chunk:
                raise _stream_error(data, target)
            if translator is None:
                yield chunk
                continue
            try:
                translated = translator.feed(chunk)
            except (ValueError, TypeError, AttributeError):
                raise upstream_error(
                    f"Deployment {target.name} sent an invalid stream event."
                ) from None
            for out in translated:
                yield out
            if translator.done:
                return
    except httpx.HTTPError as exc:
        if _timed_out(exc):
            raise upstream_error(f"Deployment {target.name} timed out mid-stream.", 504) from exc
        raise upstream_error(f"Deployment {target.name} failed mid-stream.", 502) from exc
    finally:
        await resp.aclose()


async def abort_upstream(target: Target, request_id: str) -> dict[str, int] | None:
    """Ask a Switchyard model worker to abort ``request_id`` (queued or running) and return
    the usage it had consumed; None for other upstreams or when the worker can't say."""
    if target.kind != "local_worker":
        return None
    headers = {"content-type": "application/json"}
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    try:
        resp = await client().post(
            f"{target.base_url}/abort",
            json={"request_id": request_id},
            headers=headers,
            timeout=5.0,
        )
        if resp.status_code != 200:
            return None
        usage = resp.json().get("usage")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None
