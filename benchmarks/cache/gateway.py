"""End-to-end latency of cache hits through the gateway, beside misses, over real HTTP.

Starts its own embedded PostgreSQL and Redis (under .switchyard/bench-gateway/, deleted
first, unless DATABASE_URL/REDIS_URL are set), the instant upstream and one uvicorn gateway,
then sends sequential requests with one keep-alive client and reports client-side latency:

- exact hit:        the same deterministic request again (Redis)
- exact hit, SSE:   the same, streamed (time to the last byte)
- semantic hit:     a paraphrase of a cached prompt (MiniLM in the gateway + pgvector + check),
                    the same wording each time (its embedding is remembered) and a new
                    wording each time (a new embedding per request)
- miss:             a new prompt each time (lookups run, then the instant upstream answers)
- caches off:       a tier with both caches off (the pipeline without the cache stage)

and, first, the same client calling the instant upstream directly: what the client and
loopback cost, subtracted in the "added" columns.

Run: .venv/bin/python -m benchmarks.cache.gateway [--requests 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from switchyard.processes import wait_http

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


def _percentiles(times: list[float]) -> tuple[float, float, float]:
    times = sorted(times)
    return (
        statistics.median(times),
        times[int(0.95 * (len(times) - 1))],
        times[int(0.99 * (len(times) - 1))],
    )


def paraphrases(seed: str, n: int) -> list[str]:
    """``n`` different wordings of the capital-of-France question that the cache serves from
    ``seed``'s entry (checked with the same MiniLM, threshold and second check), so each
    lookup computes a new embedding."""
    import numpy as np

    from serving.cache.agreement import prompts_agree
    from serving.engine.embeddings import MiniLMEmbedder
    from tenants.models import Tier

    prefixes = [
        "Tell me",
        "Please tell me",
        "Could you tell me",
        "Can you tell me",
        "I want to know",
        "Do you know",
        "Kindly tell me",
        "Just tell me",
        "Quickly tell me",
        "Help me: what is",
        "Please let me know",
        "Would you tell me",
    ]
    middles = ["the capital of France", "France's capital"]
    suffixes = ["?", ".", "!", "??", "!!", "...", " please?", " please.", ", please!",
                " quickly?", " briefly.", " please!!"]  # fmt: skip
    texts = [f"{p} {m}{s}" for p in prefixes for m in middles for s in suffixes]
    texts += [t.lower() for t in texts]
    embedder = MiniLMEmbedder()
    vecs = np.array(embedder.embed([seed, *texts]))
    threshold = Tier().semantic_cache_threshold
    ok = [t for t, v in zip(texts, vecs[1:], strict=True)
          if float(v @ vecs[0]) >= threshold and prompts_agree(seed, t)]  # fmt: skip
    assert len(ok) >= n, f"only {len(ok)} paraphrases pass; need {n}"
    return ok[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    args = ap.parse_args()
    from switchyard.embedded import data_dir, ensure_services, free_port

    if not os.environ.get("DATABASE_URL"):
        shutil.rmtree(data_dir() / "bench-gateway", ignore_errors=True)
    services = ensure_services(scope="bench-gateway", persistent=False)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from billing.models import ModelPrice
    from serving.cache.models import SemanticCacheEntry
    from serving.routing.deployments import deployment_set
    from tenants import services as ts

    call_command("migrate", verbosity=0)
    procs: list[subprocess.Popen] = []
    try:
        up_port, gw_port = free_port(), free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "serving.instant_upstream", "--port", str(up_port)], cwd=ROOT
        ))  # fmt: skip
        wait_http(f"http://127.0.0.1:{up_port}/health", procs[-1])
        deployment_set(name="instant", model=MODEL, base_url=f"http://127.0.0.1:{up_port}/v1",
                       context_window=4096)  # fmt: skip
        ModelPrice.objects.create(
            model=MODEL, input_micro_usd_per_mtok=100_000, output_micro_usd_per_mtok=400_000
        )
        keys = {}
        for name, on in (("cached", True), ("uncached", False)):
            tier = ts.tier_create(
                name=name, requests_per_minute=1_000_000, tokens_per_minute=100_000_000,
                tokens_per_day=1_000_000_000, max_concurrent_requests=64,
                allowed_models=[MODEL], default_model=MODEL,
                exact_cache_enabled=on, semantic_cache_enabled=on,
            )  # fmt: skip
            tenant = ts.tenant_create(name=name, slug=name, tier=tier)
            keys[name] = ts.api_key_create(tenant=tenant, name="bench")[1]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "switchyard.asgi:application", "--host",
             "127.0.0.1", "--port", str(gw_port), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=env,
        ))  # fmt: skip
        base = f"http://127.0.0.1:{gw_port}"
        wait_http(f"{base}/healthz", procs[-1])
        client = httpx.Client(base_url=f"{base}/v1", timeout=60)

        def post(key: str, body: dict, stream: bool = False) -> tuple[float, str]:
            headers = {"Authorization": f"Bearer {keys[key]}"}
            t0 = time.perf_counter()
            if stream:
                with client.stream("POST", "/chat/completions", json=body, headers=headers) as r:
                    for _ in r.iter_bytes():
                        pass
            else:
                r = client.post("/chat/completions", json=body, headers=headers)
            took = (time.perf_counter() - t0) * 1000
            assert r.status_code == 200, r.text
            return took, r.headers["x-switchyard-cache"]

        def chat(text: str, **kw) -> dict:
            # temperature 0: sampled answers are not cached semantically (docs/caching.md)
            kw.setdefault("temperature", 0)
            return {"model": MODEL, "messages": [{"role": "user", "content": text}], **kw}

        exact = chat("list three colours of the rainbow", temperature=0)
        seed = chat("What is the capital of France?")
        paraphrase = chat("Tell me the capital of France.")
        fresh = paraphrases("What is the capital of France?", args.requests + 20)
        post("cached", exact)
        post("cached", seed)
        # Semantic entries are written behind, through the sy:cachestore stream that Celery
        # drains in production; no Celery runs here, so drain it in this process.
        from serving.cache.tasks import ingest_cache_writes

        deadline = time.monotonic() + 30
        while SemanticCacheEntry.objects.count() < 2:
            assert time.monotonic() < deadline, "cache entries were not stored"
            ingest_cache_writes()
            time.sleep(0.05)
        n = args.requests
        cases = [
            ("exact hit", lambda i: post("cached", exact), "hit-exact"),
            ("exact hit, SSE", lambda i: post("cached", {**exact, "stream": True}, True),
             "hit-exact"),
            ("semantic hit, same paraphrase", lambda i: post("cached", paraphrase),
             "hit-semantic"),
            ("semantic hit, new paraphrase", lambda i: post("cached", chat(fresh.pop())),
             "hit-semantic"),
            ("miss (cache stage runs)", lambda i: post("cached", chat(f"new prompt number {i}")),
             "miss"),
            ("caches off", lambda i: post("uncached", chat(f"new prompt number {i}")), "miss"),
        ]  # fmt: skip
        print(f"{n} sequential requests per row, one keep-alive client, client-side latency\n")
        # The same client straight to the instant upstream: what the client and the loopback
        # cost without the gateway, so the rows below can be read as latency added.
        direct = httpx.Client(base_url=f"http://127.0.0.1:{up_port}/v1", timeout=60)
        for _ in range(20):
            direct.post("/chat/completions", json=exact)
        direct_times = []
        for _ in range(n):
            t0 = time.perf_counter()
            direct.post("/chat/completions", json=exact).raise_for_status()
            direct_times.append((time.perf_counter() - t0) * 1000)
        base50, _, base99 = _percentiles(direct_times)
        print(f"direct to the upstream, same client: P50 {base50:.2f} ms, P99 {base99:.2f} ms\n")
        print("| request | P50 ms | P95 ms | P99 ms | added P50 | added P99 | x-switchyard-cache |")
        print("|---|---|---|---|---|---|---|")
        for name, fn, want in cases:
            for i in range(20):  # warm-up
                fn(10_000 + i)
            times = []
            for i in range(n):
                took, got = fn(i)
                assert got == want, (name, got)
                times.append(took)
            p50, p95, p99 = _percentiles(times)
            print(f"| {name} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {p50 - base50:.2f} | "
                  f"{p99 - base99:.2f} | {want} |")  # fmt: skip
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        services.stop()


if __name__ == "__main__":
    main()
