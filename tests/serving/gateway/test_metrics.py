import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from serving.gateway import metrics
from switchyard.embedded import free_port
from switchyard.run import METRICS_DIR_NAME, reset_metrics_dir
from tests.serving.gateway.conftest import MODEL, ROOT, Caller, _stop, _wait_http
from tests.serving.gateway.conftest import test_database_url as database_url

TENANT_LATENCY = "switchyard_gateway_tenant_request_latency_seconds"


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The (labels, value) samples called ``name`` in Prometheus text (parsed, so that a
    malformed exposition fails the test)."""
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        v for lab, v in samples(text, name) if all(lab.get(k) == x for k, x in labels.items())
    )


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
    assert total(text, f"{TENANT_LATENCY}_count", tenant="metrics-tenant") == 1
    # The scrape-time collector (Redis) is there, once.
    assert text.count("# TYPE switchyard_stream_maxlen gauge") == 1


def test_metrics_are_refused_to_other_addresses(client, db, settings):
    settings.METRICS_ALLOWED_IPS = ["10.9.9.9"]
    assert client.get("/metrics").status_code == 403


async def test_tenant_labels_are_bounded_and_shared_through_redis(clean_redis, settings):
    settings.METRICS_TENANT_LABELS = 3
    metrics.forget_tenant_labels()
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        labels = [await metrics.tenant_label(client, f"bound-{i}") for i in range(10)]
        assert labels == ["bound-0", "bound-1", "bound-2"] + ["other"] * 7
        # Another process (no remembered decisions) gets the same answers from Redis.
        metrics.forget_tenant_labels()
        assert await metrics.tenant_label(client, "bound-1") == "bound-1"
        assert await metrics.tenant_label(client, "bound-7") == "other"
        settings.METRICS_TENANT_LABELS = 0
        metrics.forget_tenant_labels()
        assert await metrics.tenant_label(client, "bound-0") == "other"
    finally:
        metrics.forget_tenant_labels()
        await client.aclose()


def test_reset_metrics_dir_leaves_it_empty(tmp_path):
    (tmp_path / METRICS_DIR_NAME).mkdir()
    (tmp_path / METRICS_DIR_NAME / "counter_123.db").write_bytes(b"old run")
    path = reset_metrics_dir(tmp_path)
    assert path == tmp_path / METRICS_DIR_NAME and list(path.iterdir()) == []


class TwoWorkerGateway:
    """switchyard.asgi under uvicorn with two worker processes and the multiprocess dir set,
    as the Procfile runs it with WEB_WORKERS=2."""

    def __init__(self, metrics_dir: Path, **env_overrides: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_dir = metrics_dir
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url(),
            SWITCHYARD_TABLE_CACHE_SECONDS="0",
            SWITCHYARD_TESTING="1",
            SWITCHYARD_CACHE_EMBEDDER="local",
            PYTHONUNBUFFERED="1",
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            **env_overrides,
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "switchyard.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "2",
                "--no-access-log",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "2",
            ],  # fmt: skip
            cwd=ROOT,
            env=env,
        )
        _wait_http(f"{self.url}/healthz", self.proc)

    def scrape(self) -> str:
        # A new connection each time, so that either worker may answer.
        with httpx.Client() as c:
            r = c.get(f"{self.url}/metrics", headers={"Connection": "close"})
        r.raise_for_status()
        return r.text

    def pids_with_counters(self) -> set[str]:
        return {p.stem.rsplit("_", 1)[1] for p in self.metrics_dir.glob("counter_*.db")}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, django_db_setup, upstream_url):
    metrics_dir = reset_metrics_dir(tmp_path_factory.mktemp("two-workers"))
    gw = TwoWorkerGateway(metrics_dir, METRICS_TENANT_LABELS="3")
    try:
        yield gw
    finally:
        _stop(gw.proc)


def _chat(caller: Caller) -> int:
    r = httpx.post(
        f"{caller.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {caller.key}", "Connection": "close"},
        timeout=30,
    )
    return r.status_code


@pytest.mark.timeout(120)
def test_two_workers_metrics_add_up_whichever_worker_answers(make_caller, two_workers):
    made = make_caller(slug="multiproc")
    caller = Caller(tenant=made.tenant, key=made.key, base_url=two_workers.url)

    def latency_count(text: str) -> float:
        return total(
            text,
            "switchyard_gateway_request_latency_seconds_count",
            model=MODEL,
            endpoint="chat.completions",
        )

    latency_before = latency_count(two_workers.scrape())
    n = 40
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _chat(caller), range(n)))
    assert statuses == [200] * n
    # Both workers served some (each wrote its own counter file), so one worker's figures
    # alone would fall short of n.
    assert len(two_workers.pids_with_counters()) == 2
    for _ in range(6):
        text = two_workers.scrape()
        assert (
            total(
                text,
                "switchyard_gateway_requests_total",
                tenant="multiproc",
                endpoint="chat.completions",
                status="200",
            )
            == n
        )
        assert total(text, f"{TENANT_LATENCY}_count", tenant="multiproc") == n
        assert latency_count(text) - latency_before == n
        assert total(text, "switchyard_gateway_tokens_total", tenant="multiproc", kind="output") > 0
        # The collectors read from Redis at scrape time appear once, not once per worker.
        assert text.count("# TYPE switchyard_stream_maxlen gauge") == 1
        assert len(samples(text, "switchyard_stream_length")) == len(
            {lab["stream"] for lab, _ in samples(text, "switchyard_stream_length")}
        )
        assert len(samples(text, "switchyard_stream_maxlen")) == 1
        # Nothing else wrote into the folder (the model worker and Celery do not share it).
        names = {f.name for f in text_string_to_metric_families(text)}
        assert all(
            n.startswith(("switchyard_gateway_", "switchyard_stream_", "switchyard_ingest_"))
            for n in names
        ), names


@pytest.mark.timeout(120)
def test_two_workers_tenant_labels_stay_bounded(make_caller, two_workers):
    callers = []
    for i in range(8):
        made = make_caller(slug=f"many-{i}")
        callers.append(Caller(tenant=made.tenant, key=made.key, base_url=two_workers.url))
    # The gateway is the module's: earlier tests' tenants are there already.
    before = {
        lab["tenant"]: v for lab, v in samples(two_workers.scrape(), f"{TENANT_LATENCY}_count")
    }
    for c in callers:
        assert _chat(c) == 200
        assert _chat(c) == 200
    text = two_workers.scrape()
    counts = {lab["tenant"]: v for lab, v in samples(text, f"{TENANT_LATENCY}_count")}
    # METRICS_TENANT_LABELS=3 (the set in Redis was emptied before these tenants came): the
    # first three by name, the other five as "other"; nothing is lost.
    added = {t: v - before.get(t, 0) for t, v in counts.items() if v != before.get(t, 0)}
    assert added == {"many-0": 2, "many-1": 2, "many-2": 2, "other": 10}
    named = {"many-0", "many-1", "many-2", "other"} | set(before)
    for name in ("switchyard_gateway_requests_total", "switchyard_gateway_tokens_total"):
        assert {lab["tenant"] for lab, _ in samples(text, name)} <= named
