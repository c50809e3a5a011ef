"""Validating request bodies against the request models (serving/engine/request_models.py).

A :class:`RequestModel` wraps one body's model with its pydantic validator, built once at
import, and what callers need to know of its fields: their names, the required ones, their
ranges (for messages) and those whose value validation may change (an integral float made
an int). The gateway (serving/gateway/validation.py) and the model worker
(serving/engine/protocol.py) validate with the same instances, so they agree on every rule.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, NotRequired

import annotated_types
from pydantic import BeforeValidator, TypeAdapter, ValidationError

from serving.engine.request_errors import explain
from serving.engine.request_models import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)

_WRAPPERS = (NotRequired, typing.Union, Annotated, types.UnionType)


def _bounds(tp: Any) -> tuple[float, float] | None:
    """The (minimum, maximum) that a number field's type states, or None."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        lo = hi = None
        for meta in tp.__metadata__:
            for item in getattr(meta, "metadata", [meta]):
                if isinstance(item, annotated_types.Ge):
                    lo = item.ge
                elif isinstance(item, annotated_types.Le):
                    hi = item.le
        if lo is not None and hi is not None:
            return lo, hi
    if origin in _WRAPPERS:
        for arg in typing.get_args(tp):
            if found := _bounds(arg):
                return found
    return None


def _normalises(tp: Any) -> bool:
    """Whether validating a value of ``tp`` may change it (a before-validator converts)."""
    if typing.get_origin(tp) is Annotated and any(
        isinstance(meta, BeforeValidator) for meta in tp.__metadata__
    ):
        return True
    return any(_normalises(arg) for arg in typing.get_args(tp) if not isinstance(arg, str))


class RequestModel:
    """One request body's model, ready to validate with."""

    def __init__(self, model: type) -> None:
        self.model = model
        self.adapter: TypeAdapter[Any] = TypeAdapter(model)
        self._validate = self.adapter.validator.validate_python  # no wrapper: per request
        hints = typing.get_type_hints(model, include_extras=True)
        self.fields = frozenset(hints)
        # Not __required_keys__: it takes a string annotation (a deferred one) as required.
        self.required = tuple(
            n for n, tp in hints.items() if typing.get_origin(tp) is not NotRequired
        )
        self.bounds = {name: b for name, tp in hints.items() if (b := _bounds(tp))}
        self.normalised = frozenset(name for name, tp in hints.items() if _normalises(tp))

    def validate(self, body: dict[str, Any], *, ignore_unknown: bool = False) -> dict[str, Any]:
        """``body`` validated: a new dict of its known fields, integral floats of integer
        fields made ints. A :class:`RequestError` names the first bad parameter: a missing
        required one, else the first in the body's order that is unknown (unless
        ``ignore_unknown``) or has a bad value."""
        data = body
        if ignore_unknown and not self.fields.issuperset(body):
            data = {k: v for k, v in body.items() if k in self.fields}
        try:
            return self._validate(data)
        except ValidationError as exc:
            raise explain(data, exc, self.required, self.bounds) from None


CHAT = RequestModel(ChatCompletionRequest)
COMPLETION = RequestModel(CompletionRequest)
EMBEDDING = RequestModel(EmbeddingRequest)
BY_ENDPOINT: dict[str, RequestModel] = {
    "chat.completions": CHAT,
    "completions": COMPLETION,
    "embeddings": EMBEDDING,
}
