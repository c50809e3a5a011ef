"""Property-based tests of the tenant API against its own OpenAPI document (schemathesis).

Schemathesis generates valid and invalid bodies and headers (X-Request-Id,
X-Switchyard-Max-Cost-Usd, Cache-Control) for every operation from /v1/openapi.json and calls
the real gateway process (instant upstream behind it). The gateway must never answer 5xx,
every response must match the document (status codes, content types, bodies), and every
error must be in OpenAI's error shape. Authorization is the security scheme, which OpenAPI
does not let a document declare as a header: hypothesis fuzzes it separately.
"""

from __future__ import annotations

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from serving.openapi import CROSS_FIELD_PARAMS, REQUEST_HEADERS, openapi_document, request_schema

# A body past the size limit is refused with 413, which schemathesis does not count as a
# rejection by default (its negative cases can exceed maxItems by a megabyte).
_REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": _REJECTIONS}}}
    ),
)

EXAMPLES = 100
ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


def _headers_valid(case) -> bool:
    sent = {k.lower(): v for k, v in (case.headers or {}).items()}
    return all(
        jsonschema.Draft202012Validator(h["schema"]).is_valid(sent[h["name"].lower()])
        for h in REQUEST_HEADERS
        if h["name"].lower() in sent
    )


def _schema_valid(case) -> bool:
    endpoint = ENDPOINTS.get(case.path)
    if endpoint is None or not isinstance(case.body, dict):
        return False
    valid_body = jsonschema.Draft202012Validator(request_schema(endpoint)).is_valid(case.body)
    return valid_body and _headers_valid(case)


@pytest.fixture
def api(make_caller):
    # Limits high enough that generated traffic never meets them (limits have their own tests).
    return make_caller(
        requests_per_minute=1_000_000,
        tokens_per_minute=2_000_000_000,
        tokens_per_day=4_000_000_000,
        max_concurrent_requests=1000,
    )


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_tenant_api_conforms_to_its_schema_and_never_fails(case, api):
    response = case.call(base_url=api.base_url, headers={"Authorization": f"Bearer {api.key}"})
    assert response.status_code < 500, (response.status_code, response.text[:500])
    # Every check but "schema-valid bodies are accepted": a few rules span several fields
    # (context length, stream_options without stream, top_logprobs without logprobs) and
    # JSON Schema does not say them; the check below holds those 400s to exactly that list.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/json"), (
            case.method,
            case.path,
            response.status_code,
            response.text[:300],
        )
        error = response.json()["error"]
        assert error["message"] and error["type"]
        if response.status_code == 400 and _schema_valid(case):
            assert error["param"] in CROSS_FIELD_PARAMS or error["code"] in CROSS_FIELD_PARAMS, (
                error,
                case.body,
            )


def test_openapi_document_is_served_and_lists_every_endpoint(gateway):
    doc = httpx.get(f"{gateway.url}/v1/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/usage",
    }
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["required"] == ["model", "messages"]
    assert chat["properties"]["temperature"]["anyOf"][0] == {
        "type": "number",
        "minimum": 0,
        "maximum": 2,
    }


# What HTTP lets a header carry (h11 refuses control characters with its own plain 400).
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
_FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_BODY = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}]}


@_FUZZ
@given(
    st.one_of(
        _HEADER_TEXT,
        st.builds(lambda s: f"Bearer {s}", _HEADER_TEXT),
        st.builds(lambda s: f"Bearer sy-{s}", _HEADER_TEXT),
        st.builds(lambda s: f"Bearer sy-{s}", st.text("0123456789abcdef", max_size=4000)),
    )
)
def test_fuzzed_authorization_is_401_never_5xx(api, authorization):
    r = httpx.post(
        f"{api.base_url}/v1/chat/completions",
        json=_BODY,
        headers={"Authorization": authorization.strip()},
        timeout=30,
    )
    assert r.status_code == 401, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


@_FUZZ
@given(
    st.one_of(
        _HEADER_TEXT,
        st.from_regex(r"\A[0-9]{1,40}(\.[0-9]{0,40})?([eE][+-]?[0-9]{1,7})?\Z"),
        st.sampled_from(["1e999999", "1" * 5000, "NaN", "-0", "Infinity", "0x10", "1_000"]),
    )
)
def test_fuzzed_max_cost_header_is_accepted_or_a_400_never_5xx(api, max_cost):
    """Exactly the documented values pass; anything else is 400 invalid_max_cost, at once."""
    r = httpx.post(
        f"{api.base_url}/v1/chat/completions",
        json={**_BODY, "max_tokens": 2},
        # HTTP strips a header value's outer whitespace (h11 refuses to send it).
        headers={
            "Authorization": f"Bearer {api.key}",
            "X-Switchyard-Max-Cost-Usd": max_cost.strip(),
        },
        timeout=30,
    )
    documented = jsonschema.Draft202012Validator(_MAX_COST_SCHEMA).is_valid(max_cost.strip())
    if documented:
        assert r.status_code == 200, (max_cost, r.status_code, r.text[:300])
    else:
        assert r.status_code == 400, (max_cost, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert error["code"] == "invalid_max_cost"
        assert error["param"] == "x-switchyard-max-cost-usd"


_MAX_COST_SCHEMA = next(h for h in REQUEST_HEADERS if h["name"] == "X-Switchyard-Max-Cost-Usd")[
    "schema"
]
