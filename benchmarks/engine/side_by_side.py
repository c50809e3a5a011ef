"""llama.cpp's server and the Switchyard worker in each weight format, side by side.

    python -m benchmarks.engine.run_all --only-throughput [--workload chat,mixed]
        [--levels 1,8,32] [--weights quantized,float32] [--repeat 2] [--write]

All servers are up at once (an idle one costs nothing) and, per workload, level and repeat,
each serves the same requests in turn (the order alternates between repeats), so a noisy
neighbour on a shared machine hits every server alike. Each row gives the median output
tokens/s over the repeats and the ratio to llama.cpp's, with the spread of the paired ratios
(their min-max over repeats): the noise of the run. Workloads: ``chat`` (short prompts of
10-30 words, 128 output tokens each; issue 15's targets are on it) and ``mixed`` (prompts of
20-1000 words, outputs of 16-256; with ``--quick`` 20-300 and 16-64). Also: each server's peak
RSS, and the warm-prefix TTFT gain of the first Switchyard format (a 1,000-word system prompt
cold, then warm). ``--write`` rewrites the RESULTS.md section this module owns.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

from benchmarks.engine import run_all
from benchmarks.results import write_section

SECTION = "Engine: quantized weights (issue 15, items 1 and 3)"
WORKLOADS = {"chat": ((10, 30), (128, 128)), "mixed": ((20, 1000), (16, 256))}


def cpu_isa() -> str:
    """The CPU's model name and vector ISA, as every engine figure must say."""
    flags: set[str] = set()
    name = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and name == "unknown CPU":
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    if "avx512f" in flags:
        isa = "AVX-512" + (" with native bf16" if "avx512_bf16" in flags else " without bf16")
    elif "avx2" in flags:
        isa = "AVX2 (no AVX-512)"
    else:
        isa = "no AVX2"
    return f"{name}, {isa}"


def requests(workload: str, conc: int, quick: bool) -> list[run_all.Req]:
    prompt_range, out_range = WORKLOADS[workload]
    if quick and workload == "mixed":
        prompt_range, out_range = (20, 300), (16, 64)
    n = 8 if conc == 1 else max(8, 2 * conc)
    return run_all.workload(n, seed=conc, prompt_range=prompt_range, out_range=out_range)


def prefix_gain(url: str) -> tuple[float, float]:
    """TTFT p50 (s) for a new 1,000-word system prompt, cold then warm."""
    system = " ".join(random.Random(1).choice(run_all.WORDS) for _ in range(1000))
    cold, warm = [], []

    async def probe():
        async with httpx.AsyncClient(timeout=None, limits=run_all.NO_KEEPALIVE) as client:
            for i in range(3):
                sys_i = f"Session {i} {time.time()}. " + system
                r = run_all.Req("Say hi.", 4)
                cold.append((await run_all.one(client, url, r, system=sys_i))[1])
                r = run_all.Req(f"Say hi {i}.", 4)
                warm.append((await run_all.one(client, url, r, system=sys_i))[1])

    asyncio.run(probe())
    return statistics.median(cold), statistics.median(warm)


def main(a) -> None:
    levels = [int(x) for x in a.levels.split(",")]
    formats = a.weights.split(",")
    workloads = a.workload.split(",")
    servers: dict[str, run_all.Server] = {}
    try:
        if not a.skip_llamacpp:
            servers["llama.cpp"] = run_all.llamacpp_server()
        for fmt in formats:
            servers[f"Switchyard --weights {fmt}"] = run_all.switchyard_server(64, "--weights", fmt)
        for srv in servers.values():  # warm-up: first requests build caches and kernels
            asyncio.run(run_all.run_concurrent(srv.url, requests("chat", 1, a.quick)[:2], 2))
        results: dict[tuple[str, int, str], list[run_all.Result]] = {}
        for wl in workloads:
            for conc in levels:
                for rep in range(a.repeat):
                    names = list(servers) if rep % 2 == 0 else list(reversed(servers))
                    for name in names:
                        res = asyncio.run(
                            run_all.run_concurrent(
                                servers[name].url, requests(wl, conc, a.quick), conc
                            )
                        )
                        results.setdefault((wl, conc, name), []).append(res)
                        print(run_all.row(f"{name} [{wl}, run {rep + 1}]", conc, res), flush=True)
        first = f"Switchyard --weights {formats[0]}"
        cold, warm = prefix_gain(servers[first].url)
        rss = {name: srv.peak_rss_mb() for name, srv in servers.items()}
    finally:
        for srv in servers.values():
            srv.stop()
    text = report(a, results, servers, levels, workloads, rss, first, cold, warm)
    print(text)
    if a.write:
        write_section(SECTION, text)


def report(a, results, servers, levels, workloads, rss, first, cold, warm) -> str:
    lines = [
        f"## {SECTION}",
        "",
        f"Command: `.venv/bin/python -m benchmarks.engine.run_all {' '.join(sys.argv[1:])}` "
        f"({run_all.THREADS} threads for every server; {cpu_isa()}; SmolLM2-135M-Instruct Q4_1 "
        f"GGUF; greedy, ignore_eos; 8 requests at 1 stream, else 2 x streams; {a.repeat} "
        f"interleaved runs per row). Run on {time.strftime('%Y-%m-%d')}.",
        "",
        "| workload | streams | server | output tok/s (median) | per run | vs llama.cpp "
        "(median; min-max of paired runs) | TTFT p50 ms | latency p50 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for wl in workloads:
        for conc in levels:
            base = results.get((wl, conc, "llama.cpp"))
            for name in servers:
                runs = results[(wl, conc, name)]
                tok_s = [r.tok_s for r in runs]
                ratio = ""
                if base and name != "llama.cpp":
                    pairs = [r.tok_s / b.tok_s for r, b in zip(runs, base, strict=True)]
                    ratio = (
                        f"**{statistics.median(pairs):.2f}x** ({min(pairs):.2f}-{max(pairs):.2f})"
                    )
                ttft = statistics.median(run_all.pct(r.ttfts, 0.5) for r in runs) * 1000
                lat = statistics.median(run_all.pct(r.latencies, 0.5) for r in runs)
                per_run = " / ".join(f"{t:.0f}" for t in tok_s)
                lines.append(
                    f"| {wl} | {conc} | {name} | {statistics.median(tok_s):.1f} | {per_run} | "
                    f"{ratio} | {ttft:.0f} | {lat:.1f} |"
                )
    lines += [
        "",
        "Peak RSS: " + "; ".join(f"{n} {v:.0f} MiB" for n, v in rss.items())
        + " (each Switchyard worker preallocates a 4 GiB KV pool, `--kv-cache-mb 4096`; "
        "llama.cpp 64 slots of 1,536 tokens).",
        "",
        f"Prefix cache ({first}), 1,000-word shared system prompt: TTFT cold p50 "
        f"{cold * 1000:.0f} ms, warm p50 {warm * 1000:.0f} ms ({cold / warm:.1f}x lower).",
        "",
    ]  # fmt: skip
    return "\n".join(lines)
