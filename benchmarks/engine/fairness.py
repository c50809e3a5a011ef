"""Fairness alone (the third part of run_all), for a quick look after a scheduler change.

    python -m benchmarks.engine.fairness [--isolation-tokens N]
        [--max-prefill-tokens-while-decoding N]

Tenant B sends one request at a time, first alone and then beside tenant A keeping 20 in
flight (10x B's load), on one worker started with the given options; prints B's P50/P99
latency in both, the ratio, and tenant A's throughput during its flood.
"""

from __future__ import annotations

import argparse
import asyncio

from benchmarks.engine.run_all import fairness_probe, switchyard_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-prefill-tokens-while-decoding", type=int, default=None)
    ap.add_argument("--isolation-tokens", type=int, default=None)
    a = ap.parse_args()
    extra: list[str] = []
    if a.max_prefill_tokens_while_decoding:
        extra += ["--max-prefill-tokens-while-decoding", str(a.max_prefill_tokens_while_decoding)]
    if a.isolation_tokens is not None:
        extra += ["--isolation-tokens", str(a.isolation_tokens)]
    srv = switchyard_server(64, *extra)
    try:
        fair = asyncio.run(fairness_probe(srv.url))
    finally:
        srv.stop()
    print(f"worker options: {' '.join(extra) or '(defaults)'}")
    print(fair.line())


if __name__ == "__main__":
    main()
