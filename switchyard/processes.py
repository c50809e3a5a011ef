"""Child processes that serve HTTP (gateways, workers, upstreams) for tests and benchmarks:
wait until one answers, stop it cleanly."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx


def wait_http(
    url: str, proc: subprocess.Popen, timeout: float = 60, *, headers: dict | None = None
) -> None:
    """Poll ``url`` until it answers below 500; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up within {timeout}s")


def stop_process(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
