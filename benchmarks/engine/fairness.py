"""Fairness alone (the third part of run_all), for a quick look after a scheduler change.

    python -m benchmarks.engine.fairness [--max-prefill-tokens-while-decoding N]

Tenant B sends one request at a time, first alone and then beside tenant A keeping 20 in
flight (10x B's load), on one worker; prints B's P50/P99 latency in both and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio

from benchmarks.engine.run_all import fairness_probe, pct, switchyard_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-prefill-tokens-while-decoding", type=int, default=None)
    a = ap.parse_args()
    cap = a.max_prefill_tokens_while_decoding
    srv = switchyard_server(64, *(["--max-prefill-tokens-while-decoding", str(cap)] if cap else []))
    try:
        solo, shared = asyncio.run(fairness_probe(srv.url))
    finally:
        srv.stop()
    print("| tenant B | P50 s | P99 s |\n|---|---|---|")
    print(f"| alone | {pct(solo, 0.5):.2f} | {pct(solo, 0.99):.2f} |")
    print(f"| beside A at 10x | {pct(shared, 0.5):.2f} | {pct(shared, 0.99):.2f} |")
    print(f"B's P99 beside A / alone: {pct(shared, 0.99) / pct(solo, 0.99):.2f}x")


if __name__ == "__main__":
    main()
