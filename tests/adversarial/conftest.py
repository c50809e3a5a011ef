"""The adversarial suite: each attack of a hostile tenant (or a hostile caller of a worker,
or a hostile operator) runs against real processes: a uvicorn gateway, the model worker,
Redis and PostgreSQL. The gateway fixtures come from :mod:`tests.gateway_fixtures`.

While the attacks run against the shared gateway, a probe calls its ``/healthz`` every 50 ms;
``test_zz_healthz_probe.py`` (collected last) checks the probe's P99 stayed under 100 ms:
no attack may stall the event loop that every tenant shares.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

PROBE_INTERVAL = 0.05


class HealthzProbe:
    def __init__(self, url: str) -> None:
        self.url = f"{url}/healthz"
        self.samples: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.samples.append(time.perf_counter() - t0)
                else:
                    self.failures += 1
                self._stop.wait(PROBE_INTERVAL)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def p99(self) -> float:
        values = sorted(self.samples)
        return values[min(len(values) - 1, int(0.99 * len(values)))]


@pytest.fixture(scope="session")
def healthz_probe(gateway):
    probe = HealthzProbe(gateway.url)
    probe.start()
    yield probe
    probe.stop()


@pytest.fixture(autouse=True)
def _probe_beside_the_attacks(request):
    """Every adversarial test that uses the shared gateway runs with the probe on."""
    if "gateway" in request.fixturenames or "make_caller" in request.fixturenames:
        request.getfixturevalue("healthz_probe")
