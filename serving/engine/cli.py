"""The model worker's command line and process: options, logging, uvicorn.

    python -m serving.engine.cli --model smollm2-135m-instruct --port 8100
    (or: manage.py serve_model ...)

The port is bound at once and the model loads behind it (``serving.engine.app``); a worker
that cannot load exits with status 1. With an auth token (``--auth-token`` or
``SWITCHYARD_WORKER_TOKEN``) every endpoint but health, readiness, liveness and metrics wants
``Authorization: Bearer <token>``. See docs/engine.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from serving.engine.app import build_app
from serving.engine.config import KV_DTYPES, EngineConfig, resolve_isolation
from serving.engine.embeddings import MiniLMEmbedder
from serving.engine.engine import AsyncEngine
from serving.engine.quant import WEIGHT_FORMATS

log = logging.getLogger(__name__)

TOKEN_ENV = "SWITCHYARD_WORKER_TOKEN"


@dataclass(frozen=True)
class WorkerOptions:
    """What :func:`serve` runs: the model, its engine's config and the HTTP side."""

    model: str = "smollm2-135m-instruct"  # a known name or a .gguf path
    engine: EngineConfig = field(default_factory=EngineConfig)
    host: str = "127.0.0.1"
    port: int = 8100
    embeddings: bool = True  # load MiniLM and serve /v1/embeddings
    auth_token: str | None = None
    log_level: str = "info"


def bounded_int(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value: 'x'"
    return parse


def isolation_value(text: str) -> int | str:
    """An argparse type for ``--isolation-tokens``: ``auto``, ``off`` or an integer >= 0."""
    if text in ("auto", "off"):
        return text
    return bounded_int(0)(text)


isolation_value.__name__ = "integer"  # argparse's "invalid integer value: 'x'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's options (this CLI's and ``manage.py serve_model``'s)."""
    parser.add_argument("--model", default="smollm2-135m-instruct", help="name or .gguf path")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--no-embeddings", action="store_true", help="do not load MiniLM")
    parser.add_argument("--kv-cache-mb", type=int, default=None, help="KV cache size in MiB")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument(
        "--max-prefill-tokens-while-decoding",
        type=int,
        default=None,
        help="cap on prompt tokens in a step that also decodes running streams (default: none)",
    )
    parser.add_argument(
        "--isolation-tokens",
        type=isolation_value,
        default="auto",
        help="latency isolation: while several tenants are active, all but the least-served "
        "share this many tokens per step, 0 for none; 'off' to share every step (default auto: "
        "0 on a CPU worker, off on CUDA; docs/engine.md)",
    )
    parser.add_argument(
        "--isolation-prefill-tokens",
        type=bounded_int(1),
        default=64,
        help="under isolation, prompt tokens per step for a least-served tenant that is "
        "already running beside other tenants' streams (default 64)",
    )
    parser.add_argument(
        "--kv-dtype",
        choices=sorted(KV_DTYPES),
        default="auto",
        help="KV cache element type (default auto: the model's, float32 on CPU, bfloat16 on CUDA)",
    )
    parser.add_argument(
        "--weights",
        choices=WEIGHT_FORMATS,
        default="auto",
        help="weight format on a CPU (default auto: the GGUF's own quantized blocks where the "
        "CPU has native bfloat16, else float32; docs/engine.md, 'Weights')",
    )
    parser.add_argument(
        "--threads",
        type=bounded_int(1),
        default=None,
        help="torch threads on a CPU (default: the physical cores this process may use)",
    )
    parser.add_argument(
        "--auth-token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"require 'Authorization: Bearer <token>' on every endpoint but health and metrics "
        f"(default: ${TOKEN_ENV}; prefer the environment, the command line is visible to ps)",
    )


def worker_options(o: Mapping[str, Any]) -> WorkerOptions:
    """The worker's options from parsed ``add_arguments`` options (this CLI and manage.py)."""
    engine = EngineConfig(
        kv_cache_bytes=o["kv_cache_mb"] * (1 << 20) if o["kv_cache_mb"] else None,
        kv_dtype=KV_DTYPES[o["kv_dtype"]],
        max_num_seqs=o["max_num_seqs"],
        max_num_batched_tokens=o["max_num_batched_tokens"],
        max_prefill_tokens_while_decoding=o["max_prefill_tokens_while_decoding"],
        isolation_tokens=resolve_isolation(o["isolation_tokens"]),
        isolation_prefill_tokens=o["isolation_prefill_tokens"],
        weights=o["weights"],
        threads=o["threads"],
    )
    return WorkerOptions(
        model=o["model"],
        engine=engine,
        host=o["host"],
        port=o["port"],
        embeddings=not o["no_embeddings"],
        auth_token=o["auth_token"] or None,
    )


def serve(options: WorkerOptions) -> None:
    """Serve ``options.model`` until interrupted: the port answers at once (503 while
    loading), the model loads and warms up behind it. Exits with status 1 if it cannot load."""
    import uvicorn

    logging.basicConfig(
        level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    warn_if_open(options.host, options.auth_token)

    def load() -> tuple[AsyncEngine, MiniLMEmbedder | None]:
        started = time.perf_counter()
        engine = AsyncEngine.from_model(options.model, options.engine)
        embedder = MiniLMEmbedder() if options.embeddings else None
        log.info(
            "loaded %s in %.1f s (%d KV blocks)",
            engine.model_name,
            time.perf_counter() - started,
            engine.stats().kv_blocks_total,
        )
        return engine, embedder

    failures: list[BaseException] = []

    def failed(exc: BaseException) -> None:
        failures.append(exc)
        server.should_exit = True

    app = build_app(loader=load, auth_token=options.auth_token, on_load_failure=failed)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=options.host,
            port=options.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    log.info("listening on %s:%d; loading %s", options.host, options.port, options.model)
    server.run()
    if failures:
        raise SystemExit(1)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (a name other than localhost may be anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def warn_if_open(host: str, auth_token: str | None) -> None:
    """Warn loudly when a worker without a token listens beyond this machine."""
    if not auth_token and not is_loopback(host):
        bar = "!" * 78
        log.warning(
            "\n%s\nThis model worker listens on %s WITHOUT an auth token: anyone who can reach "
            "it can\ngenerate, and set any tenant, weight and cache salt. Set --auth-token or "
            "%s,\nand store the same token as the deployment's API key.\n%s",
            bar,
            host,
            TOKEN_ENV,
            bar,
        )


def main(argv: list[str] | None = None) -> None:
    """``python -m serving.engine.cli``: parse the options and serve."""
    parser = argparse.ArgumentParser(description="Switchyard model worker")
    add_arguments(parser)
    serve(worker_options(vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
