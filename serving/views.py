"""Django views of the tenant API: adapters over :mod:`serving.tenant_api`'s handlers (the
ASGI app, :mod:`serving.tenant_asgi`, serves the same handlers without Django), plus the
OpenAPI document, the catch-all 404 and the Prometheus endpoint."""

from __future__ import annotations

import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST

from serving import tenant_api
from serving.gateway import metrics
from serving.gateway.errors import GatewayError
from serving.tenant_api import ApiReply, ApiRequest


def as_django(reply: ApiReply) -> HttpResponse:
    """A handler's reply as Django's response (the ASGI app sends replies itself)."""
    if reply.events is not None:
        resp: HttpResponse = StreamingHttpResponse(reply.events, content_type=reply.content_type)
    else:
        resp = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    for k, v in reply.headers.items():
        resp[k] = v
    return resp


@csrf_exempt
async def chat_completions(request):
    return as_django(await tenant_api.chat_completions(ApiRequest.from_django(request)))


@csrf_exempt
async def completions(request):
    return as_django(await tenant_api.completions(ApiRequest.from_django(request)))


@csrf_exempt
async def embeddings(request):
    return as_django(await tenant_api.embeddings(ApiRequest.from_django(request)))


@csrf_exempt
async def models(request, model: str | None = None):
    return as_django(await tenant_api.models(ApiRequest.from_django(request), model))


def openapi(request):
    """The tenant API's OpenAPI 3.1 document (public: it holds no tenant data)."""
    from serving.openapi import openapi_document

    return JsonResponse(openapi_document())


@csrf_exempt
async def not_found(request, rest: str):
    return GatewayError(404, f"Unknown endpoint /v1/{rest}.", code="unknown_url").response()


def prometheus_metrics(request):
    """Prometheus text. Labels name tenants, so only scrapers on an allowed address
    (``METRICS_ALLOWED_IPS``, loopback by default) and logged-in operators may read it."""
    from tenants.roles import is_operator

    if request.META.get("REMOTE_ADDR") not in settings.METRICS_ALLOWED_IPS and not is_operator(
        request.user
    ):
        return HttpResponse("Forbidden: metrics are for operators and scrapers.", status=403)
    started = time.perf_counter()
    body = metrics.render()
    resp = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    resp["x-render-ms"] = f"{(time.perf_counter() - started) * 1000:.1f}"
    return resp
