"""Every error type, in the OpenAI shape, through the official client and raw HTTP."""

import time

import httpx
import openai
import pytest

from tenants import services
from tests.serving.gateway.conftest import MODEL

MSG = [{"role": "user", "content": "hi"}]


def _error(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_bad_key_is_401(make_caller, gateway):
    make_caller()
    client = openai.OpenAI(api_key="sy-nope", base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model=MODEL, messages=MSG)
    assert err.value.code == "invalid_api_key"
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={})
    assert r.status_code == 401 and _error(r)["code"] == "missing_api_key"


def test_unknown_model_is_404_model_not_found(make_caller):
    with pytest.raises(openai.NotFoundError) as err:
        make_caller().client().chat.completions.create(model="gpt-9", messages=MSG)
    assert err.value.code == "model_not_found" and err.value.param == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": MSG, "temperature": 3}, "temperature"),
        ({"model": MODEL, "messages": MSG, "temperature": "hot"}, "temperature"),
        ({"model": MODEL, "messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "messages": MSG, "max_tokens": 2.5}, "max_tokens"),
        ({"model": MODEL, "messages": MSG, "n": 99}, "n"),
        ({"model": MODEL, "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": MODEL, "messages": MSG, "frobnicate": True}, "frobnicate"),
        (
            {"model": MODEL, "messages": MSG, "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        (
            {"model": MODEL, "messages": MSG, "response_format": {"type": "yaml"}},
            "response_format.type",
        ),
        # every number bounded: type, finiteness, range; every collection by count
        ({"model": MODEL, "messages": MSG, "temperature": True}, "temperature"),
        ({"model": MODEL, "messages": MSG, "temperature": -1e-300}, "temperature"),
        ({"model": MODEL, "messages": MSG, "top_p": 1.5}, "top_p"),
        ({"model": MODEL, "messages": MSG, "seed": 2**64}, "seed"),
        ({"model": MODEL, "messages": MSG, "max_tokens": 1e300}, "max_tokens"),
        (
            {"model": MODEL, "messages": MSG, "max_completion_tokens": 10**30},
            "max_completion_tokens",
        ),
        ({"model": MODEL, "messages": MSG, "n": True}, "n"),
        ({"model": MODEL, "messages": MSG, "presence_penalty": 2.5}, "presence_penalty"),
        ({"model": MODEL, "messages": MSG, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"model": MODEL, "messages": MSG, "logit_bias": {"50256": 101}}, "logit_bias.50256"),
        ({"model": MODEL, "messages": MSG, "logit_bias": {"-1": 1}}, "logit_bias"),
        ({"model": MODEL, "messages": MSG, "logit_bias": {"1" * 40: 1}}, "logit_bias"),
        (
            {"model": MODEL, "messages": MSG, "logit_bias": {str(i): 1 for i in range(1025)}},
            "logit_bias",
        ),
        ({"model": MODEL, "messages": MSG, "metadata": {"team": 7}}, "metadata"),
        (
            {"model": MODEL, "messages": MSG, "metadata": {str(i): "x" for i in range(17)}},
            "metadata",
        ),
        ({"model": MODEL, "messages": MSG * 2049}, "messages"),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 257}],
            },
            "messages[0].content",
        ),
        ({"model": MODEL, "messages": MSG, "stop": "x" * 257}, "stop"),
        ({"model": "m" * 257, "messages": MSG}, "model"),
    ],  # fmt: skip
)
def test_invalid_parameters_are_400_naming_the_parameter(make_caller, body, param):
    r = make_caller().post("/chat/completions", json=body)
    assert r.status_code == 400
    assert _error(r)["param"] == param
    assert _error(r)["type"] == "invalid_request_error"


def test_integral_float_is_an_integer(make_caller):
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema says), sent on as 3.
    r = make_caller().post(
        "/chat/completions", json={"model": MODEL, "messages": MSG, "max_tokens": 3.0}
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 3


def test_newline_in_a_model_name_is_a_json_404(make_caller):
    caller = make_caller()
    r = httpx.get(
        f"{caller.base_url}/v1/models/a%0Ab", headers={"Authorization": f"Bearer {caller.key}"}
    )
    assert r.status_code == 404 and _error(r)["code"] == "model_not_found"


def test_malformed_json_is_400(make_caller):
    r = make_caller().post(
        "/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and _error(r)["code"] == "invalid_json"


def test_oversized_body_is_413(make_caller):
    big = "x" * 1_100_000
    r = make_caller().post("/chat/completions", json={"model": MODEL, "messages": [
        {"role": "user", "content": big}]})  # fmt: skip
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"


def test_prompt_beyond_the_context_window_is_400(make_caller):
    words = "word " * 20_000
    with pytest.raises(openai.BadRequestError) as err:
        make_caller().client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": words}]
        )
    assert err.value.code == "context_length_exceeded"


def test_unknown_endpoint_and_wrong_method(make_caller):
    caller = make_caller()
    r = caller.post("/nothing/here", json={})
    assert r.status_code == 404 and _error(r)["code"] == "unknown_url"
    r = httpx.get(
        f"{caller.base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {caller.key}"}
    )
    assert r.status_code == 405


def test_revoked_key_stops_within_a_second(make_caller):
    caller = make_caller()
    client = caller.client()
    client.chat.completions.create(model=MODEL, messages=MSG)
    key = caller.tenant.api_keys.get()
    services.api_key_revoke(key=key)
    time.sleep(1.1)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=MSG)


def test_suspended_tenant_is_403_within_a_second(make_caller):
    caller = make_caller()
    client = caller.client()
    client.chat.completions.create(model=MODEL, messages=MSG)
    services.tenant_suspend(tenant=caller.tenant)
    time.sleep(1.1)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model=MODEL, messages=MSG)
    assert err.value.code == "tenant_suspended"


def test_upstream_failure_is_502_in_openai_shape(make_caller, upstream_url):
    from serving.routing.deployments import deployment_set

    caller = make_caller()
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/fail/v1")
    with pytest.raises(openai.InternalServerError) as err:
        caller.client().chat.completions.create(model=MODEL, messages=MSG)
    assert err.value.status_code == 502 and err.value.code == "upstream_error"
    assert "sy-" not in str(err.value.body)


def test_unreachable_deployment_is_502_not_a_timeout(make_caller):
    from serving.routing.deployments import deployment_set
    from switchyard.embedded import free_port

    caller = make_caller()
    deployment_set(name="instant", model=MODEL, base_url=f"http://127.0.0.1:{free_port()}/v1")
    for stream in (False, True):
        r = caller.post(
            "/chat/completions", json={"model": MODEL, "messages": MSG, "stream": stream}
        )
        assert r.status_code == 502, r.text
        assert "unreachable" in _error(r)["message"]


def test_no_deployment_is_503(make_caller):
    from serving.models import Deployment

    caller = make_caller()
    Deployment.objects.filter(model=MODEL).update(enabled=False)
    r = caller.post("/chat/completions", json={"model": MODEL, "messages": MSG})
    assert r.status_code == 503 and _error(r)["code"] == "model_unavailable"
    assert r.headers["retry-after"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/completions", {"model": MODEL, "prompt": [2**40]}, "prompt"),
        ("/completions", {"model": MODEL, "prompt": [-1]}, "prompt"),
        ("/completions", {"model": MODEL, "prompt": ["x"] * 2049}, "prompt"),
        ("/completions", {"model": MODEL, "prompt": "x", "best_of": 9}, "best_of"),
        ("/embeddings", {"model": "all-minilm-l6-v2", "input": [[1, 2**40]]}, "input"),
        ("/embeddings", {"model": "all-minilm-l6-v2", "input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_completion_and_embedding_numbers_are_bounded(make_caller, path, body, param):
    r = make_caller().post(path, json=body)
    assert r.status_code == 400, r.text
    assert _error(r)["param"] == param


def test_null_optional_fields_are_absent(make_caller):
    body = {"model": MODEL, "messages": MSG, "max_tokens": None, "temperature": None,
            "stop": None, "n": None, "user": None, "stream": None, "response_format": None,
            "logit_bias": None, "metadata": None, "seed": None}  # fmt: skip
    r = make_caller().post("/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: hi"
