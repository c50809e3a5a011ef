"""A hostile tenant's inputs against the real gateway process: numbers that underflow,
overflow or take seconds to convert, JSON nested past any parser's recursion, nulls that
slip past the reservation. Each answer is a clear error in OpenAI's shape, at once, or a
normal answer with what was meant (greedy; absent) sent upstream, never a 500.

The deployment points at the instant upstream's ``/echo/v1``, which returns the body it
received as ``x_received``: what the gateway forwarded is checked, not assumed.
"""

from __future__ import annotations

import statistics
import time

import httpx
import pytest

from serving.gateway.validation import GREEDY_TEMPERATURE, MAX_JSON_DEPTH
from serving.routing.deployments import deployment_set
from tests.gateway_fixtures import MODEL

MSG = [{"role": "user", "content": "hi"}]


def _error(r: httpx.Response, status: int = 400) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    return body["error"]


@pytest.fixture
def echo(make_caller, upstream_url):
    deployment_set(
        name="instant", model=MODEL, base_url=f"{upstream_url}/echo/v1", context_window=4096
    )
    return make_caller()


def _raw(caller, content: bytes, path: str = "/chat/completions", **headers) -> httpx.Response:
    return caller.post(
        path, content=content, headers={"Content-Type": "application/json", **headers}
    )


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-45, 1e-38, GREEDY_TEMPERATURE / 2])
def test_an_underflowing_temperature_is_answered_greedily(echo, temperature):
    r = echo.post("/chat/completions", json={"model": MODEL, "messages": MSG,
                                             "temperature": temperature})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["x_received"]["temperature"] == 0
    assert r.json()["choices"][0]["message"]["content"] == "echo: hi"


def test_top_p_zero_is_greedy_and_not_forwarded(echo):
    r = echo.post("/chat/completions", json={"model": MODEL, "messages": MSG, "top_p": 0})
    assert r.status_code == 200, r.text
    received = r.json()["x_received"]
    assert received["temperature"] == 0 and "top_p" not in received


def test_ordinary_sampling_is_forwarded_as_sent(echo):
    body = {"model": MODEL, "messages": MSG, "temperature": 0.7, "top_p": 0.9, "seed": 7}
    received = echo.post("/chat/completions", json=body).json()["x_received"]
    assert (received["temperature"], received["top_p"], received["seed"]) == (0.7, 0.9, 7)


def test_null_fields_are_absent_upstream(echo):
    nulls = {"max_tokens": None, "max_completion_tokens": None, "temperature": None,
             "top_p": None, "stop": None, "n": None, "seed": None, "user": None,
             "logit_bias": None, "metadata": None, "response_format": None,
             "presence_penalty": None, "frequency_penalty": None}  # fmt: skip
    r = echo.post("/chat/completions", json={"model": MODEL, "messages": MSG, **nulls})
    assert r.status_code == 200, r.text
    received = r.json()["x_received"]
    assert None not in received.values()
    assert not set(nulls) & set(received), received


def test_a_million_digit_max_cost_header_is_refused_at_once(echo):
    body = {"model": MODEL, "messages": MSG, "max_tokens": 2}
    assert echo.post("/chat/completions", json=body).status_code == 200  # warm: key cached
    timings = []
    for value in ("1e999999", "9" * 8000, "1e-999999", "Infinity", "-0.5", "1000000.01"):
        t0 = time.perf_counter()
        r = echo.post("/chat/completions", json=body,
                      headers={"X-Switchyard-Max-Cost-Usd": value})  # fmt: skip
        timings.append(time.perf_counter() - t0)
        error = _error(r)
        assert (error["param"], error["code"]) == ("x-switchyard-max-cost-usd", "invalid_max_cost")
    # Building the integer of 1e999999 took seconds on the event loop; now it is never built.
    assert statistics.median(timings) < 0.25, timings
    r = echo.post("/chat/completions", json=body, headers={"X-Switchyard-Max-Cost-Usd": "0.5"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("depth", [100_000, 1_000, MAX_JSON_DEPTH + 1])
def test_deeply_nested_json_is_a_400(echo, depth):
    nested = b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "hi",'
    nested += b'"x": ' + b"[" * depth + b"]" * depth + b"}]}"
    t0 = time.perf_counter()
    error = _error(_raw(echo, nested))
    assert error["code"] == "invalid_json" and time.perf_counter() - t0 < 1.0


def test_json_at_the_depth_limit_is_parsed(echo):
    # Nesting allowed inside a message (extra fields are ignored); 64 levels in all.
    inner = MAX_JSON_DEPTH - 4
    body = (b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", '
            b'"content": "hi", "x": ' + b"[" * inner + b"]" * inner + b"}]}")  # fmt: skip
    r = _raw(echo, body)
    assert r.status_code == 200, r.text


def test_three_hundred_thousand_arrays_are_refused_before_parsing(echo):
    flat = b'{"model": "m", "messages": [' + b",".join([b"[]"] * 300_000) + b"]}"
    t0 = time.perf_counter()
    assert _error(_raw(echo, flat))["code"] == "invalid_json"
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        (b'{"model": "M", "messages": [], "max_tokens": ' + b"9" * 5000 + b"}", None, None),
        (
            b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "seed": '
            + str(2**64).encode()
            + b"}",
            None,
            "seed",
        ),
        (
            b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 1e999}',
            None,
            None,
        ),
        (
            b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            None,
            None,
        ),
        (b'{"model": "M", "messages": [{"role": "user", "content": "\\ud800"}]}', None, None),
        (b'{"model": "M", "messages": [{"role": "user", "content": "\xff"}]}', None, None),
        (b'[{"model": "M"}]', None, None),
        (b'"M"', None, None),
    ],  # fmt: skip
)
def test_numbers_and_text_no_model_could_take_are_400s(echo, raw, code, param):
    """Huge integers, infinities, NaN, lone surrogates (which could not be forwarded) and
    invalid UTF-8: a 400 in OpenAI's shape, either as unparseable JSON or naming the field."""
    error = _error(_raw(echo, raw.replace(b'"M"', b'"' + MODEL.encode() + b'"')))
    if param is None:
        assert error["code"] == "invalid_json", error
    else:
        assert error["param"] == param, error


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/completions", {"prompt": [2**31]}, "prompt"),
        ("/completions", {"prompt": [9.5]}, "prompt"),
        ("/chat/completions", {"messages": MSG, "logit_bias": {"1": 1e308}}, "logit_bias.1"),
        ("/chat/completions", {"messages": MSG, "logit_bias": {"1" * 4000: 1}}, "logit_bias"),
        ("/chat/completions", {"messages": MSG * 5000}, "messages"),
        ("/chat/completions", {"messages": MSG, "stop": ["a"] * 5000}, "stop"),
    ],
)
def test_huge_numbers_and_counts_name_the_field(echo, path, body, param):
    error = _error(echo.post(path, json={"model": MODEL, **body}))
    assert error["param"] == param, error
