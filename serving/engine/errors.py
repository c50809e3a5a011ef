"""Errors the engine raises; the worker server maps them to HTTP answers."""


class UnsupportedModelError(ValueError):
    """The GGUF file uses an architecture or quantization this engine cannot run."""


class EngineOverloaded(RuntimeError):
    """Too many requests are waiting; callers should retry later (HTTP 503)."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(f"{waiting} requests are waiting (limit {limit}); retry shortly.")
        self.waiting = waiting
        self.limit = limit
