"""What every management API view shares: names of any kind in URLs, and no input that the
database would refuse (a NUL in a path or query parameter is a 404 or a 400, never a 500)."""

from __future__ import annotations

import unicodedata

from django.http import Http404
from rest_framework import exceptions, serializers

# Rows keyed by a name that may hold any character ("v1.2", "a/b", spaces): DRF's default
# `[^/.]+` would make such a row unreachable. Clients percent-encode the name; Django decodes
# the path before routing, so "a%2Fb" is the name "a/b". Only views without extra detail
# actions may use it (a name may end in "/suspend").
ANY_NAME = "(?s:.+)"


def _unstorable(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value)


class SafeInputMixin:
    """Refuse control characters in URL values (404: no row has such a name) and in query
    parameters (400) before any query runs."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication and permissions first
        for value in kwargs.values():
            if isinstance(value, str) and _unstorable(value):
                raise Http404
        bad = sorted(
            {k for k, values in request.query_params.lists() for v in values if _unstorable(v)}
            | {k for k in request.query_params if _unstorable(k)}
        )
        if bad:
            raise exceptions.ValidationError(
                {k: ["Control characters are not allowed here."] for k in bad}
            )


class NameRelatedField(serializers.SlugRelatedField):
    """A related row by its name or slug; a value the database would refuse (NUL, unpaired
    surrogates, control characters) is a field error, never a query."""

    def to_internal_value(self, data):
        if isinstance(data, str) and _unstorable(data):
            self.fail("invalid")  # never echo it: a lone surrogate cannot even be rendered
        return super().to_internal_value(data)
