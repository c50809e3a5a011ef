"""A usage consumer as its own process, for kill tests: drains the usage stream into the
database in a loop, as the Celery task does, claiming a dead consumer's entries after 300 ms.

Run: ``python -m tests.serving.gateway.usage_consumer`` with DATABASE_URL and REDIS_URL set.
"""

import dataclasses
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")

import django  # noqa: E402

django.setup()

from billing.usage import usage_ingestor  # noqa: E402
from switchyard.redis_client import get_redis  # noqa: E402

if __name__ == "__main__":
    ingestor = dataclasses.replace(usage_ingestor, batch=500, claim_idle_ms=300)
    r = get_redis()
    ingestor.ensure_group(r)
    print("usage consumer ready", flush=True)
    while True:
        if not ingestor.drain(r):
            time.sleep(0.05)
