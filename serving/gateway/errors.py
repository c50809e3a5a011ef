"""The OpenAI error shape, from one place: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from django.http import JsonResponse


class GatewayError(Exception):
    """A refusal the client sees as an OpenAI-format error with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JsonResponse:
        resp = JsonResponse(self.body(), status=self.status)
        for k, v in self.headers.items():
            resp[k] = v
        return resp


def invalid(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def invalid_json(message: str) -> GatewayError:
    """A body that is not acceptable JSON (400 ``invalid_json``)."""
    return GatewayError(400, message, code="invalid_json")


def unauthorized(message: str, code: str = "invalid_api_key") -> GatewayError:
    return GatewayError(401, message, type="invalid_request_error", code=code)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def rate_limited(message: str, headers: dict[str, str], code: str = "rate_limit_exceeded"):
    return GatewayError(429, message, type="requests", code=code, headers=headers)


def insufficient_quota(message: str) -> GatewayError:
    return GatewayError(429, message, type="insufficient_quota", code="insufficient_quota")


def upstream_error(message: str, status: int = 502) -> GatewayError:
    return GatewayError(status, message, type="api_error", code="upstream_error")
