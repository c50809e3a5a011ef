"""Errors the engine raises; the worker server maps them to HTTP answers."""

from __future__ import annotations

from serving.engine.types import RequestUsage


class UnsupportedModelError(ValueError):
    """The GGUF file uses an architecture or quantization this engine cannot run."""


class EngineOverloaded(RuntimeError):
    """Too many requests are waiting; callers should retry later (HTTP 503)."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(f"{waiting} requests are waiting (limit {limit}); retry shortly.")
        self.waiting = waiting
        self.limit = limit


class RequestFailed(RuntimeError):
    """A request ended early: it failed (``status`` 400 when it alone failed, 500 when the
    engine could serve nothing) or was aborted by ``POST /v1/abort`` (409). ``usage`` is the
    work done before it ended."""

    def __init__(
        self, message: str, *, code: str, status: int, usage: RequestUsage | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.usage = usage or RequestUsage()
