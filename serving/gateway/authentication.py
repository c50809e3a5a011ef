"""The first stage: an ``Authorization`` header → the caller's key, tenant and tier."""

from __future__ import annotations

from serving.gateway import metrics
from serving.gateway.errors import GatewayError
from tenants.auth import AuthContext, AuthFailure, aauthenticate_key


async def authenticate(authorization: str | None, client: str | None = None) -> AuthContext:
    """The caller's key, tenant and tier, or an OpenAI-format refusal: 401 for a missing,
    unknown, revoked or expired key, 403 for a suspended tenant, 429 with Retry-After
    once ``client`` (the peer address) has failed too often (tenants.auth_throttle)."""
    scheme, _, raw = (authorization or "").partition(" ")
    if authorization and (scheme.lower() != "bearer" or not raw.strip()):
        metrics.REJECTIONS.labels("auth").inc()
        raise GatewayError(401, "Use 'Authorization: Bearer <key>'.", code="invalid_api_key")
    try:
        return await aauthenticate_key(raw.strip(), client)
    except AuthFailure as exc:
        metrics.REJECTIONS.labels("auth").inc()
        if exc.reason == "throttled":
            raise GatewayError(
                429,
                exc.message,
                type="requests",
                code="too_many_auth_failures",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        if exc.reason == "tenant_suspended":
            raise GatewayError(403, exc.message, code="tenant_suspended") from None
        code = "missing_api_key" if exc.reason == "missing" else "invalid_api_key"
        raise GatewayError(401, exc.message, code=code) from None
