import httpx

from tests.gateway.conftest import MODEL


def test_prometheus_metrics_count_requests_tokens_and_rejections(make_caller, gateway):
    caller = make_caller(slug="metrics-tenant")
    caller.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    caller.post("/chat/completions", json={"model": MODEL, "messages": []})
    httpx.post(f"{gateway.url}/v1/chat/completions", json={})
    text = httpx.get(f"{gateway.url}/metrics").text
    assert (
        'switchyard_gateway_requests_total{endpoint="chat.completions",model="smollm2-135m-instruct",'
        'status="200",tenant="metrics-tenant"} 1.0'
    ) in text
    assert 'status="400",tenant="metrics-tenant"' in text
    assert 'switchyard_gateway_rejections_total{reason="auth"}' in text
    assert 'switchyard_gateway_tokens_total{kind="output",model="smollm2-135m-instruct"' in text
    assert "switchyard_gateway_request_latency_seconds_bucket" in text


def test_metrics_are_refused_to_other_addresses(client, db, settings):
    settings.METRICS_ALLOWED_IPS = ["10.9.9.9"]
    assert client.get("/metrics").status_code == 403
