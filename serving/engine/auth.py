"""The worker's bearer token: with one set, every HTTP path outside ``OPEN_PATHS`` needs it."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.engine.protocol import ProtocolError
from serving.engine.responses import error_response

# Open without the token: probes and scrapes (they reveal load, never content).
OPEN_PATHS = frozenset({"/health", "/healthz", "/livez", "/readyz", "/metrics"})


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``Bearer <token>`` (constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode()
    )


class TokenAuth:
    """ASGI middleware: with a token, every HTTP path outside ``OPEN_PATHS`` needs it."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            header = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    header = value.decode("latin-1")
                    break
            if not token_matches(header, self.token):
                message = (
                    "This model worker wants its token: send 'Authorization: Bearer <token>'."
                    if header is None
                    else "The worker token is not valid."
                )
                resp = error_response(
                    ProtocolError(message, code="invalid_api_key", status=401),
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)
