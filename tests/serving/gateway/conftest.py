"""Gateway tests: the fixtures live in :mod:`tests.gateway_fixtures` (loaded by the root
conftest, so that the adversarial suite shares the same gateway process)."""

from switchyard.processes import stop_process as _stop
from switchyard.processes import wait_http as _wait_http
from tests.gateway_fixtures import MODEL, ROOT, Caller, GatewayProcess, test_database_url

__all__ = ["MODEL", "ROOT", "Caller", "GatewayProcess", "test_database_url", "_stop", "_wait_http"]
