"""`make run`: one command that brings the whole platform up on this machine.

Starts embedded PostgreSQL/Redis for whatever DATABASE_URL/REDIS_URL leave unset, checks
them, migrates, seeds the demo tenant, then runs the Procfile's processes (web, Celery worker
and beat, model worker) under honcho. Ctrl-C stops every process and the embedded services.

The model worker gets a shared-secret token (``SWITCHYARD_WORKER_TOKEN``, made once and kept
in the data dir, mode 600, unless the environment sets one); the demo deployments on the
local worker store it as their API key, so only the gateway can call the worker.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from switchyard.embedded import data_dir, ensure_services
from switchyard.preflight import PreflightError, check_database, check_redis

ROOT = Path(__file__).resolve().parent.parent
WORKER_TOKEN_ENV = "SWITCHYARD_WORKER_TOKEN"
# The web processes' PROMETHEUS_MULTIPROC_DIR (Procfile `web`), under the data dir.
METRICS_DIR_NAME = "prometheus-web"


def reset_metrics_dir(directory: Path) -> Path:
    """Make ``directory/prometheus-web`` exist and be empty: prometheus_client's multiprocess
    files of a previous run would otherwise be added to this run's figures."""
    path = directory / METRICS_DIR_NAME
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def worker_token(directory: Path) -> str:
    """The local model worker's token: read from ``directory/worker_token``, or made there
    once (mode 600)."""
    path = directory / "worker_token"
    token = path.read_text().strip() if path.exists() else ""
    if not token:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
    os.chmod(path, 0o600)
    return token


def _manage(*args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def _banner(host: str, port: int, seed: dict) -> str:
    base = f"http://{host}:{port}"
    key_line = (
        f"  demo API key     {seed['api_key']}   (shown once; kept in {seed['api_key_file']})"
        if seed["api_key_new"]
        else f"  demo API key     in {seed['api_key_file']}"
    )
    return "\n".join(
        [
            "",
            "Switchyard is running.",
            f"  console          {base}/        (operator {seed['operator']!r}, password in "
            f"{seed['operator_password_file']})",
            f"  operator pass    {seed['operator_password']}",
            key_line,
            f"  management API   {base}/api/docs/",
            f"  health           {base}/readyz",
            "",
            "Try:",
            f"  curl -s {base}/v1/chat/completions \\",
            f'    -H "Authorization: Bearer $(cat {seed["api_key_file"]})" \\',
            '    -H "Content-Type: application/json" \\',
            '    -d \'{"model": "smollm2-135m-instruct", "temperature": 0, "messages": '
            '[{"role": "user", "content": "What is the capital of France?"}]}\'',
            "",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def _wait_and_announce(host: str, port: int, seed: dict, stop: threading.Event) -> None:
    deadline = time.monotonic() + 180
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    print(_banner(host, port, seed), flush=True)
                    return
        except OSError:
            pass
        stop.wait(0.5)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
    # The Procfile says `python`: make it this interpreter (the project's virtualenv).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["SWITCHYARD_DATA_DIR"] = str(data_dir())
    data_dir().mkdir(parents=True, exist_ok=True)
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    os.environ["WEB_HOST"], os.environ["WEB_PORT"] = host, str(port)
    os.environ.setdefault("MODEL_PORT", "8100")
    os.environ.setdefault(
        "SWITCHYARD_MODEL_WORKER_URL", f"http://127.0.0.1:{os.environ['MODEL_PORT']}"
    )
    # The worker (Procfile `model`) reads it from the environment; seed_demo stores it as the
    # local deployments' API key.
    if not os.environ.get(WORKER_TOKEN_ENV):
        os.environ[WORKER_TOKEN_ENV] = worker_token(data_dir())
    reset_metrics_dir(data_dir())

    print("Starting services…", flush=True)
    services = ensure_services(scope="run", persistent=True)
    for name in services.describe():
        print(f"  embedded {name}", flush=True)
    stop = threading.Event()
    try:
        try:
            check_database(os.environ["DATABASE_URL"])
            check_redis(os.environ["REDIS_URL"])
        except PreflightError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        _manage("migrate", "--noinput", "-v", "0")
        seed = json.loads(_manage("seed_demo", capture=True).strip().splitlines()[-1])
        threading.Thread(
            target=_wait_and_announce, args=(host, port, seed, stop), daemon=True
        ).start()
        procfile = os.environ.get("SWITCHYARD_PROCFILE", str(ROOT / "Procfile"))
        honcho = [sys.executable, "-m", "honcho", "-f", procfile, "-d", str(ROOT), "start"]
        proc = subprocess.Popen(honcho, cwd=ROOT)
        # A SIGTERM (service manager, `timeout`) stops everything the way Ctrl-C does.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # On Ctrl-C honcho got the terminal's SIGINT too; on SIGTERM it did not.
            proc.send_signal(signal.SIGINT)
            try:
                return proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                return proc.wait()
    finally:
        stop.set()
        services.stop()
        print("Switchyard stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
