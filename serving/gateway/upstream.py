"""Calls to deployments over one pooled ``aiohttp.ClientSession`` per event loop.

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
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from serving.gateway.errors import GatewayError, invalid, upstream_error
from serving.providers import anthropic, azure
from serving.routing.deployments import Target

# Connect timeout: a deployment that does not accept a connection in this long is down.
CONNECT_SECONDS = 5.0

_sessions: dict[int, aiohttp.ClientSession] = {}


def session() -> aiohttp.ClientSession:
    """The event loop's pooled aiohttp session (connections kept alive per host). aiohttp is
    called directly: httpx's pool (httpcore) scans every pooled connection on each request,
    and httpx over aiohttp's transport doubled the client's CPU per request
    (benchmarks/RESULTS.md, "Gateway")."""
    loop = asyncio.get_running_loop()
    s = _sessions.get(id(loop))
    if s is None or s.closed:
        connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=30)
        s = aiohttp.ClientSession(
            connector=connector,
            skip_auto_headers=("User-Agent",),
            auto_decompress=True,
            raise_for_status=False,
        )
        _sessions[id(loop)] = s
    return s


def _timeout(seconds: float, *, stream: bool = False) -> aiohttp.ClientTimeout:
    """A whole answer may take ``seconds``; a stream may go ``seconds`` without a byte."""
    connect = min(CONNECT_SECONDS, seconds)
    if stream:
        return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=seconds)
    return aiohttp.ClientTimeout(total=seconds, sock_connect=connect)


class TransportError(Exception):
    """The deployment could not be reached or broke the connection (``timed_out``: it took
    longer than allowed)."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out" if timed_out else "unreachable")
        self.timed_out = timed_out


def _transport_error(exc: BaseException) -> TransportError:
    return TransportError(isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError))


@dataclass(slots=True)
class Answer:
    """A whole upstream answer."""

    status: int
    body: bytes
    retry_after: str | None = None


async def post(url: str, payload: Any, headers: dict[str, str], timeout: float) -> Answer:
    """POST ``payload`` as JSON and read the whole answer; raises :class:`TransportError`."""
    try:
        async with session().post(
            url, data=orjson.dumps(payload), headers=headers, timeout=_timeout(timeout)
        ) as resp:
            return Answer(resp.status, await resp.read(), resp.headers.get("retry-after"))
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise _transport_error(exc) from exc


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
        resp = await post(url, payload, headers, target.timeout_seconds)
    except TransportError as exc:
        if exc.timed_out:
            raise upstream_error(f"Deployment {target.name} timed out.", 504) from exc
        raise upstream_error(f"Deployment {target.name} is unreachable.", 502) from exc
    if resp.status != 200:
        raise _error_from(resp.status, resp.body, target, resp.retry_after)
    try:
        answer = _loads(resp.body)
        if target.kind == "anthropic":
            answer = anthropic.to_chat_completion(answer, body.get("model", ""))
    except (ValueError, TypeError, AttributeError):
        answer = None
    if not isinstance(answer, dict):
        raise upstream_error(f"Deployment {target.name} answered with invalid JSON.")
    return answer


def _loads(data: bytes | str) -> Any:
    """JSON from an upstream: orjson, or the standard library for the NaN and Infinity that
    some servers write (orjson refuses them)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The lines of a response body, however long (aiohttp's own line reader stops at its
    buffer size), without their line ends."""
    pending = b""
    async for data in content.iter_any():
        pending += data
        if b"\n" not in data:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            for part in line.split(b"\r"):  # CRLF, or a lone CR (SSE allows both)
                yield part
    for part in pending.split(b"\r"):
        yield part


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
    translator = (
        anthropic.StreamTranslator(body.get("model", "")) if target.kind == "anthropic" else None
    )
    try:
        resp = await session().post(
            url,
            data=orjson.dumps(payload),
            headers=headers,
            timeout=_timeout(target.timeout_seconds, stream=True),
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if _transport_error(exc).timed_out:
            raise upstream_error(f"Deployment {target.name} timed out.", 504) from exc
        raise upstream_error(f"Deployment {target.name} is unreachable.", 502) from exc
    try:
        if resp.status != 200:
            raise _error_from(
                resp.status, await resp.read(), target, resp.headers.get("retry-after")
            )
        async for line in _lines(resp.content):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                resp.content.read_nowait()  # what is left (the chunked end): keep-alive
                return
            try:
                chunk = _loads(data)
            except ValueError:
                continue
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk and "choices" not in chunk:
                raise _stream_error(data.decode(errors="replace"), target)
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
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if _transport_error(exc).timed_out:
            raise upstream_error(f"Deployment {target.name} timed out mid-stream.", 504) from exc
        raise upstream_error(f"Deployment {target.name} failed mid-stream.", 502) from exc
    finally:
        # A whole body returns the connection to the pool; a stream left early (the client
        # went away, an error) closes it, which tells a Switchyard worker to stop generating.
        if resp.content.at_eof():
            resp.release()
        else:
            resp.close()


async def abort_upstream(target: Target, request_id: str) -> dict[str, int] | None:
    """Ask a Switchyard model worker to abort ``request_id`` (queued or running) and return
    the usage it had consumed; None for other upstreams or when the worker can't say."""
    if target.kind != "local_worker":
        return None
    headers = {"content-type": "application/json"}
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    try:
        resp = await post(f"{target.base_url}/abort", {"request_id": request_id}, headers, 5.0)
        if resp.status != 200:
            return None
        usage = _loads(resp.body).get("usage")
    except (TransportError, ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


async def close_sessions() -> None:
    """Close the running loop's session (at server shutdown: no "Unclosed connector")."""
    s = _sessions.pop(id(asyncio.get_running_loop()), None)
    if s is not None and not s.closed:
        await s.close()
