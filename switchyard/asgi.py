"""ASGI entry point: the tenant API, the rest of Django over HTTP, WebSocket through Channels.

The tenant API (``/v1/…``) authenticates by API key and needs none of the console's
middleware (sessions, CSRF, messages, cookie auth). Django's built-in middleware are sync
classes, and in an async stack each adds thread hops to every request, serialised on one
thread; measured, that capped one gateway process far below its event loop's capacity
(benchmarks/RESULTS.md, "Gateway"). So ``/v1/`` skips it: the hot endpoints (completions,
embeddings, models, messages) are a plain ASGI app (:mod:`serving.tenant_asgi`) over the same
handlers as the views, and the rest of ``/v1/`` has a Django handler of its own with no
middleware: same URLconf, async end to end.

In front of everything, :class:`switchyard.edge.EdgeLimits` enforces the request-body and
WebSocket-message limits before anything reads a body.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402

from serving.cache.pg import close_pool  # noqa: E402
from serving.gateway.upstream import close_sessions  # noqa: E402
from serving.tenant_asgi import TenantApi  # noqa: E402
from serving.ws_urls import websocket_urlpatterns  # noqa: E402
from switchyard.edge import EdgeLimits  # noqa: E402

API_PREFIX = "/v1/"


class TenantApiHandler(ASGIHandler):
    """Django's ASGI handler without the middleware stack, for the tenant API.

    Django wraps each request in a ``ThreadSensitiveContext``, which starts (and joins) a new
    thread for the request's first thread-sensitive sync call (its own request_started and
    request_finished receivers are such calls). The tenant API's views are async and run
    their few database reads with ``thread_sensitive=False``; without the per-request context
    those receivers run on asgiref's one long-lived sync thread instead of a new thread per
    request.
    """

    async def __call__(self, scope, receive, send) -> None:
        await self.handle(scope, receive, send)

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response_async)


# The hot endpoints are answered by the plain ASGI app (serving.tenant_asgi); the rest of /v1
# (usage, the OpenAPI document, unknown paths) by Django, without middleware.
tenant_api_app = TenantApi(fallback=TenantApiHandler())


HEALTHZ = b'{"status": "ok"}'


async def healthz(send) -> None:
    """Liveness, answered on the event loop itself: no middleware, no thread. Its latency is
    the loop's lag, which is what a liveness probe (and the adversarial suite's) should see."""
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(HEALTHZ)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": HEALTHZ})


async def http_app(scope, receive, send) -> None:
    if scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
        await healthz(send)
        return
    app = tenant_api_app if scope["path"].startswith(API_PREFIX) else django_asgi_app
    await app(scope, receive, send)


async def lifespan(scope, receive, send) -> None:
    """Startup and shutdown: at shutdown the event loop's upstream connections and the
    semantic cache's database connections are closed."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close_sessions()
            await close_pool()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = EdgeLimits.from_settings(
    ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": URLRouter(websocket_urlpatterns),
            "lifespan": lifespan,
        }
    )
)
