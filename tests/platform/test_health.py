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
