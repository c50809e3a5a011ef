"""The Anthropic and Azure OpenAI stand-ins (serving.anthropic_upstream) as a process, shared
by tests/serving/gateway/test_anthropic.py, test_azure.py and the adversarial suite."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from switchyard.embedded import free_port
from switchyard.processes import stop_process, wait_http
from tests.gateway_fixtures import ROOT


@pytest.fixture(scope="session")
def provider_url():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.anthropic_upstream", "--port", str(port)], cwd=ROOT
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def last_request(provider_url: str) -> dict:
    """What the stand-in last received: path, query, headers, body."""
    return httpx.get(f"{provider_url}/last", timeout=5).json()
