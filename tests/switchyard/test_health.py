import time

from switchyard.redis_client import get_redis
from switchyard.tasks import HEARTBEAT_KEY, heartbeat


def test_healthz_says_the_process_is_up(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_checks_database_and_redis(client, db):
    r = client.get("/readyz")
    body = r.json()
    assert r.status_code == 200, body
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]


def test_readyz_reports_celery_heartbeat_age(client, db):
    get_redis().delete(HEARTBEAT_KEY)
    assert client.get("/readyz").json()["checks"]["celery"]["heartbeat_age_s"] is None
    heartbeat()  # the task body, as the worker runs it
    age = client.get("/readyz").json()["checks"]["celery"]["heartbeat_age_s"]
    assert age is not None and 0 <= age < 5
    assert float(get_redis().get(HEARTBEAT_KEY)) <= time.time()


def test_readyz_says_starting_until_a_model_worker_is_ready(client, db, upstream_url):
    from serving.routing.deployments import deployment_set

    # A worker still loading answers its /health with 503: the gateway is not ready yet.
    dep = deployment_set(
        name="loading-worker", model="m", base_url=f"{upstream_url}/loading/v1", kind="local_worker"
    )
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "starting"
    assert r.json()["checks"]["model_workers"] == {"loading-worker": "starting"}
    deployment_set(name="ready-worker", model="m", base_url=f"{upstream_url}/v1",
                   kind="local_worker")  # fmt: skip
    r = client.get("/readyz")
    assert r.status_code == 200, r.json()
    assert r.json()["checks"]["model_workers"]["ready-worker"] == "ready"
    dep.delete()


def test_readyz_reports_a_failing_check_as_degraded_and_stays_in_rotation(client, db, monkeypatch):
    from switchyard import health

    def broken():
        raise RuntimeError("no database for the workers")

    monkeypatch.setitem(health.READINESS_CHECKS, "model_workers", broken)
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "degraded"
    assert r.json()["checks"]["model_workers"] == {"error": "RuntimeError"}
