"""Content filters through the gateway: PII redacted in and out and in the logs; blocklist."""

import openai
import pytest

from serving.models import RequestLog
from serving.request_log import request_log_ingestor
from switchyard.redis_client import get_redis
from tests.serving.gateway.conftest import MODEL

SECRET = "reach me at jane.doe@example.com or 4111 1111 1111 1111"


def test_pii_is_redacted_before_the_model_and_in_the_answer(make_caller):
    client = make_caller(log_bodies=True).client()
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": SECRET}], max_tokens=50
    )
    out = resp.choices[0].message.content
    assert "jane.doe" not in out and "4111" not in out
    assert "[EMAIL]" in out and "[CARD]" in out


def test_pii_is_redacted_in_streams(make_caller):
    client = make_caller().client()
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": SECRET}],
            stream=True,
            max_tokens=50,
        )  # fmt: skip
    )
    assert text == "echo: reach me at [EMAIL] or [CARD]"


def test_logged_bodies_are_redacted(make_caller):
    caller = make_caller(log_bodies=True, pii_redaction=False)
    resp = caller.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": SECRET}], max_tokens=50
    )
    assert "jane.doe@example.com" in resp.choices[0].message.content  # filter off for the tier
    request_log_ingestor.drain(get_redis())
    log = RequestLog.objects.get(tenant=caller.tenant)
    stored = str(log.request_body) + str(log.response_body)
    assert "jane.doe" not in stored and "4111" not in stored and "[EMAIL]" in stored


def test_bodies_are_not_logged_unless_the_tier_says_so(make_caller):
    caller = make_caller()
    caller.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}]
    )
    request_log_ingestor.drain(get_redis())
    log = RequestLog.objects.get(tenant=caller.tenant)
    assert log.request_body is None and log.response_body is None


def test_blocklisted_term_is_refused(make_caller):
    client = make_caller(blocklist=["project zeus"]).client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me about Project Zeus"}]
        )
    assert err.value.code == "content_blocked"


def test_json_response_format_is_checked(make_caller):
    client = make_caller().client()
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "not json"}],
            response_format={"type": "json_object"},
        )
    assert err.value.code == "invalid_json_output"
