"""manage.py in a second terminal: with DATABASE_URL/REDIS_URL unset it finds the embedded
PostgreSQL and Redis that `make run` started from the same data dir, and when they are not
running it says so in one sentence and exits non-zero. Real processes: a launcher that starts
the embedded pair the way `make run` does, and manage.py in a shell without the URLs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from switchyard.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = """
import signal, sys, time
from switchyard.embedded import ensure_services
services = ensure_services(scope="run", persistent=False)
print("ready", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    while True:
        time.sleep(0.2)
finally:
    services.stop()
"""


def shell_env(data_dir: Path) -> dict[str, str]:
    """A second terminal: the data dir, and no service URLs."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(SWITCHYARD_DATA_DIR=str(data_dir), SWITCHYARD_TESTING="0")
    return env


def manage(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=shell_env(data_dir),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def data_dir():
    # Short: PostgreSQL's Unix socket path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="sy-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow  # starts make run's launcher
@pytest.mark.timeout(300)
def test_manage_finds_the_running_services_and_says_when_they_stopped(data_dir):
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER], cwd=ROOT, env=shell_env(data_dir),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert launcher.stdout.readline().strip() == "ready"
        record = data_dir / "run" / "services.json"
        assert record.stat().st_mode & 0o777 == 0o600
        urls = json.loads(record.read_text())
        assert urls["DATABASE_URL"].startswith("postgresql://")
        assert urls["REDIS_URL"].startswith("redis://127.0.0.1:")

        found = manage(data_dir, "showmigrations", "tenants")
        assert found.returncode == 0, found.stderr
        assert "0002_initial" in found.stdout
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(60)
    assert not (data_dir / "run" / "services.json").exists()

    stopped = manage(data_dir, "showmigrations", "tenants")
    assert stopped.returncode == 2
    lines = stopped.stderr.strip().splitlines()
    assert len(lines) == 1, stopped.stderr
    assert "make run" in lines[0] and str(data_dir) in lines[0]
    assert "Traceback" not in stopped.stderr


def test_a_record_left_by_a_crashed_launcher_is_not_trusted(data_dir):
    (data_dir / "run").mkdir(parents=True)
    dead = {
        "pid": 999_999,
        "DATABASE_URL": f"postgresql://postgres:@/postgres?host={data_dir / 'gone'}",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    (data_dir / "run" / "services.json").write_text(json.dumps(dead))
    result = manage(data_dir, "export_config")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not running" in lines[0] and "did not answer" in lines[0]
    assert "make run" in lines[0]


def test_help_needs_no_services(data_dir):
    result = manage(data_dir, "help")
    assert result.returncode == 0 and "Available subcommands" in result.stdout
