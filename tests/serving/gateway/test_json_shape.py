"""The body's shape check before parsing: depth and container count, outside strings. (Its
cost, C-speed passes linear in the body, is measured by benchmarks/hardening/run.py.)"""

from __future__ import annotations

import pytest

from serving.gateway.errors import GatewayError
from serving.gateway.validation import MAX_JSON_DEPTH, check_json_shape


def _nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return b'{"model": "m", "x": ' + opener * depth + closer * depth + b"}"


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (_nested(MAX_JSON_DEPTH - 1), False),  # the outer object makes MAX_JSON_DEPTH
        (_nested(MAX_JSON_DEPTH), True),
        (_nested(MAX_JSON_DEPTH, b'{"a":', b"}"), True),  # objects count as arrays do
        (b'{"s": "' + b"[" * 10_000 + b'"}', False),  # brackets inside a string are text
        (b'{"s": "\\"' + b"[" * 10_000 + b'"}', False),  # after an escaped quote, still text
        (b'{"m": [' + b"[]," * 5_000 + b"[]]}", False),  # wide, shallow
        (_nested(100_000), True),
    ],
)
def test_depth_is_measured_outside_strings(body, refused):
    if refused:
        with pytest.raises(GatewayError) as err:
            check_json_shape(body)
        assert err.value.status == 400 and err.value.code == "invalid_json"
    else:
        check_json_shape(body)


def test_a_megabyte_of_nesting_is_refused():
    with pytest.raises(GatewayError):
        check_json_shape(_nested(500_000))
