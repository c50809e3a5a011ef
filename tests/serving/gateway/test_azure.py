"""Azure OpenAI deployments: the deployment path, the ``api-key`` header and the
``api-version`` parameter, against the stand-in in serving.anthropic_upstream."""

from __future__ import annotations

import pytest

from billing.models import UsageRecord
from serving.providers.azure import DEFAULT_API_VERSION
from serving.routing.deployments import deployment_set
from tests.provider_fixtures import last_request, provider_url  # noqa: F401 - fixture
from tests.serving.gateway.test_anthropic import drain

GPT = "gpt-azure"
AZ_KEY = "azure-operator-secret"


@pytest.fixture
def azure(make_caller, provider_url):  # noqa: F811 - fixture
    deployment_set(
        name="azure",
        model=GPT,
        upstream_model="gpt4o-prod",
        kind="azure_openai",
        base_url=provider_url,
        api_key=AZ_KEY,
        api_version="2024-06-01",
        health_check="none",
    )
    return make_caller(allowed_models=[GPT], default_model=GPT)


def test_azure_path_header_and_version(azure, provider_url):  # noqa: F811
    raw = azure.client().chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": "hi azure"}], max_tokens=10
    )
    resp = raw.parse()
    seen = last_request(provider_url)
    assert seen["path"] == "/openai/deployments/gpt4o-prod/chat/completions"
    assert seen["query"] == {"api-version": "2024-06-01"}
    assert seen["headers"]["api-key"] == AZ_KEY
    assert "authorization" not in seen["headers"]
    assert resp.choices[0].message.content == "echo: hi azure"
    assert resp.model == GPT
    drain()
    rec = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (rec.input_tokens, rec.output_tokens) == (6, 3) and rec.deployment == "azure"


def test_azure_streams_and_defaults_the_version(make_caller, provider_url):  # noqa: F811
    deployment_set(
        name="azure-default",
        model=GPT,
        kind="azure_openai",
        base_url=provider_url,
        api_key=AZ_KEY,
        health_check="none",
    )
    caller = make_caller(allowed_models=[GPT], default_model=GPT)
    chunks = list(
        caller.client().chat.completions.create(
            model=GPT,
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    seen = last_request(provider_url)
    assert seen["path"] == f"/openai/deployments/{GPT}/chat/completions"
    assert seen["query"] == {"api-version": DEFAULT_API_VERSION}
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream me"
    )
    assert chunks[-1].usage.completion_tokens == 3


def test_azure_refused_key_is_upstream_auth_failed(make_caller, provider_url):  # noqa: F811
    deployment_set(
        name="azure-nokey",
        model=GPT,
        kind="azure_openai",
        base_url=provider_url,
        health_check="none",
    )
    caller = make_caller(allowed_models=[GPT], default_model=GPT)
    resp = caller.post(
        "/chat/completions", {"model": GPT, "messages": [{"role": "user", "content": "x"}]}
    )
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "upstream_auth_failed"
