"""`make run`'s launcher, end to end: embedded services, migrate, seed, processes, Ctrl-C.

Runs the real launcher in its own data dir with web, Celery worker and beat (the model worker
is covered by the engine's tests), and stops it the way a terminal does: SIGINT to the group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from switchyard.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # runs make run: every process, the model included


class Output:
    """Collects a process's output in a thread, so waiting for a line never blocks."""

    def __init__(self, proc) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc) -> None:
        for line in proc.stdout:
            self.text += line

    def wait_for(self, pattern: str, timeout: float, proc) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text):
                return self.text
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not printed in {timeout}s; output:\n{self.text[-4000:]}")

    def finish(self) -> str:
        self._thread.join(10)
        return self.text


@pytest.mark.timeout(240)
def test_run_starts_everything_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "\n".join(
            line
            for line in (ROOT / "Procfile").read_text().splitlines()
            if not line.startswith("model:")
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        SWITCHYARD_DATA_DIR=str(tmp_path / "data"),
        PORT=str(port),
        SWITCHYARD_PROCFILE=str(procfile),
        SWITCHYARD_TESTING="0",
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchyard.run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = Output(proc)
    try:
        out = output.wait_for(r"Ctrl-C stops everything", 180, proc)
        assert f"http://127.0.0.1:{port}/api/docs/" in out
        key = re.search(r"demo API key\s+(sy-\S+)", out).group(1)
        assert (tmp_path / "data" / "demo_api_key").read_text().strip() == key
        assert (tmp_path / "data" / "worker_token").stat().st_mode & 0o777 == 0o600
        assert "curl -s" in out and "/v1/chat/completions" in out
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            ready = json.loads(r.read())
        # This Procfile runs no model worker: the gateway is up and in rotation, and says
        # its local worker is down.
        assert ready["status"] == "degraded", ready
        assert ready["checks"]["database"]["ok"] and ready["checks"]["redis"]["ok"]
        assert set(ready["checks"]["model_workers"].values()) == {"unreachable"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/docs/", timeout=10) as r:
            assert r.status == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert "Switchyard stopped." in output.finish()
    pg_pid = tmp_path / "data" / "run" / "postgres" / "postmaster.pid"
    assert not pg_pid.exists(), "embedded PostgreSQL left running"
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
