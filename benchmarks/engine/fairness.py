"""Fairness alone (the third part of run_all, with more requests), after a scheduler change.

    python -m benchmarks.engine.fairness [--requests 30] [--flood 20]
        [--isolation-tokens auto|off|N] [--max-prefill-tokens-while-decoding N]

One worker, started with the given options (none: the defaults). Tenant B sends ``--requests``
chat requests one at a time (prompts of 50-200 words, 32 output tokens), first alone, then
beside tenant A, which keeps ``--flood`` requests in flight for as long as B runs. Tenant A
also runs alone first, for its throughput without a neighbour. Prints B's P50/P99 latency in
both, the P99 ratio (target <= 2x), A's output tokens/s beside B against alone (target >= 60%),
and writes the numbers as JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass

import httpx

from benchmarks.engine.run_all import NO_KEEPALIVE, one, pct, switchyard_server, workload


@dataclass
class FairnessRun:
    options: str
    requests: int
    flood: int
    b_solo: list[float]  # B's request latencies (s) alone
    b_shared: list[float]  # B's latencies beside A's flood
    a_solo_tok_s: float  # A's output tokens/s alone
    a_shared_tok_s: float  # A's output tokens/s while B ran beside it

    @property
    def p99_ratio(self) -> float:
        return pct(self.b_shared, 0.99) / pct(self.b_solo, 0.99)

    @property
    def flood_kept(self) -> float:
        return self.a_shared_tok_s / self.a_solo_tok_s

    def line(self) -> str:
        s50, s99 = pct(self.b_solo, 0.5), pct(self.b_solo, 0.99)
        b50, b99 = pct(self.b_shared, 0.5), pct(self.b_shared, 0.99)
        return (
            f"worker options {self.options}; {self.requests} requests per tenant: tenant B alone "
            f"P50 {s50:.2f} s / P99 {s99:.2f} s; beside tenant A ({self.flood} in flight) "
            f"P50 {b50:.2f} s / P99 {b99:.2f} s (**{self.p99_ratio:.2f}x** at P99, target <= 2x); "
            f"tenant A {self.a_shared_tok_s:.1f} output tok/s beside B against "
            f"{self.a_solo_tok_s:.1f} alone (**{self.flood_kept:.0%}** kept, target >= 60%)"
        )


async def _flood(client: httpx.AsyncClient, url: str, flood: int, stop: asyncio.Event) -> list:
    """Tenant A keeps ``flood`` requests in flight until ``stop``; (finish time, tokens) each."""
    done: list[tuple[float, int]] = []
    reqs = iter(workload(100_000, 98, (50, 200), (32, 32)))

    async def lane() -> None:
        while not stop.is_set():
            tokens = (await one(client, url, next(reqs), tenant="A"))[0]
            done.append((time.perf_counter(), tokens))

    await asyncio.gather(*(lane() for _ in range(flood)))
    return done


def _rate(done: list[tuple[float, int]], start: float, end: float) -> float:
    return sum(t for at, t in done if start <= at <= end) / (end - start)


async def probe(url: str, *, requests: int = 30, flood: int = 20, a_solo_s: float = 60.0):
    """B alone, A alone, then B beside A's flood; returns (B solo, B shared, A solo tok/s,
    A shared tok/s)."""
    async with httpx.AsyncClient(timeout=None, limits=NO_KEEPALIVE) as client:
        b_reqs = workload(requests, 99, (50, 200), (32, 32))
        solo = [(await one(client, url, r, tenant="B"))[2] for r in b_reqs]

        # A alone: its steady rate over a window after its first wave is in.
        stop = asyncio.Event()
        task = asyncio.ensure_future(_flood(client, url, flood, stop))
        await asyncio.sleep(10.0)
        start = time.perf_counter()
        await asyncio.sleep(a_solo_s)
        end = time.perf_counter()
        stop.set()
        a_solo = _rate(await task, start, end)

        # B beside A: A's flood is running (and its first prompts are in) when B starts.
        b_reqs = workload(requests, 97, (50, 200), (32, 32))
        stop = asyncio.Event()
        task = asyncio.ensure_future(_flood(client, url, flood, stop))
        await asyncio.sleep(1.0)
        start = time.perf_counter()
        shared = [(await one(client, url, r, tenant="B"))[2] for r in b_reqs]
        end = time.perf_counter()
        stop.set()
        a_shared = _rate(await task, start, end)
    return solo, shared, a_solo, a_shared


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=30, help="tenant B's requests per phase")
    ap.add_argument("--flood", type=int, default=20, help="tenant A's requests in flight")
    ap.add_argument("--a-solo-seconds", type=float, default=60.0)
    ap.add_argument("--max-prefill-tokens-while-decoding", type=int, default=None)
    ap.add_argument("--isolation-tokens", default=None, help="auto, off or N (default: unset)")
    ap.add_argument("--json", default=None, help="write the run here as JSON")
    a = ap.parse_args()
    extra: list[str] = []
    if a.max_prefill_tokens_while_decoding:
        extra += ["--max-prefill-tokens-while-decoding", str(a.max_prefill_tokens_while_decoding)]
    if a.isolation_tokens is not None:
        extra += ["--isolation-tokens", str(a.isolation_tokens)]
    srv = switchyard_server(64, *extra)
    try:
        solo, shared, a_solo, a_shared = asyncio.run(
            probe(srv.url, requests=a.requests, flood=a.flood, a_solo_s=a.a_solo_seconds)
        )
    finally:
        srv.stop()
    run = FairnessRun(" ".join(extra) or "(defaults)", a.requests, a.flood, solo, shared,
                      a_solo, a_shared)  # fmt: skip
    print(run.line())
    if a.json:
        with open(a.json, "w") as f:
            json.dump({**asdict(run), "p99_ratio": run.p99_ratio, "flood_kept": run.flood_kept},
                      f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
