"""One error shape for the management API: RFC 9457 problem details.

``{"type", "title", "status", "detail", "errors": {field: [messages]}}``; field validation
from services (Django ValidationError) and domain refusals map here, once.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tenants.errors import TenantsError


def _django_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "message_dict"):
        return {k: [str(m) for m in v] for k, v in exc.message_dict.items()}
    return {"non_field_errors": [str(m) for m in exc.messages]}


def problem_exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(_django_errors(exc))
    if isinstance(exc, TenantsError):
        return Response(
            {
                "type": f"about:blank#{exc.code}",
                "title": "Refused",
                "status": status.HTTP_409_CONFLICT,
                "detail": exc.message,
                "code": exc.code,
            },
            status=status.HTTP_409_CONFLICT,
            content_type="application/problem+json",
        )
    response = exception_handler(exc, context)
    if response is None:
        return None
    body = {"type": "about:blank", "status": response.status_code}
    if isinstance(exc, exceptions.ValidationError):
        body["title"] = "Invalid input"
        body["detail"] = "One or more fields are invalid."
        data = response.data
        body["errors"] = data if isinstance(data, dict) else {"non_field_errors": data}
    else:
        body["title"] = getattr(exc, "default_detail", "Error")
        detail = response.data.get("detail") if isinstance(response.data, dict) else response.data
        body["detail"] = str(detail)
    response.data = body
    response.content_type = "application/problem+json"
    return response
