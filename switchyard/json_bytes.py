"""JSON as bytes for the gateway's hot paths: orjson, or the standard library (with Django's
encoder) for what orjson refuses (integers past 64 bits, non-string keys, Django's types)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from django.core.serializers.json import DjangoJSONEncoder


def json_bytes(data: Any) -> bytes:
    """``data`` as compact JSON bytes."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":")).encode()
