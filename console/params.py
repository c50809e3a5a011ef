"""Query-string values as the console's selectors may use them: any character may arrive in a
URL, but PostgreSQL refuses NUL in a query parameter (a 500), and a search needs no novel."""

from __future__ import annotations

from django.http import HttpRequest

MAX_LENGTH = 200


def query_param(request: HttpRequest, name: str, *, max_length: int = MAX_LENGTH) -> str:
    """``request.GET[name]`` stripped of NUL and surrounding space, at most ``max_length``."""
    value = request.GET.get(name, "")
    return value.replace("\x00", "").strip()[:max_length]
