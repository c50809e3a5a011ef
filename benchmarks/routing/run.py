"""Routing benchmark: decision time, classifier latency, throughput with failover.

1. Routing decision (rules + balancer, no classifier), in process: 12 rules of which the 12th
   matches (every rule is evaluated), a group of 4 deployments, each strategy. Plus the
   per-request Redis live-state fetch, measured on its own.
2. Task classifier on CPU: MiniLM embedding + linear layer, the held-out prompts.
3. Throughput through a real gateway process and the instant upstream, side by side:
   a healthy group; a group whose preferred deployment answers 500 on every request with
   cooldown off (every request fails over); the same with cooldown on (the default).

Run: ``.venv/bin/python -m benchmarks.routing.run [--write]`` (starts embedded PostgreSQL and
Redis under .switchyard/bench-routing/ unless DATABASE_URL/REDIS_URL are set).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.results import write_section
from switchyard.processes import stop_process, wait_http

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def setup_django() -> object:
    from switchyard.embedded import ensure_services

    services = ensure_services(scope="bench-routing", persistent=False)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return services


# ---- 1. decision time --------------------------------------------------------------------


def bench_decisions(iterations: int) -> list[dict]:
    from serving.routing.deployments import Target
    from serving.routing.health import DeploymentState
    from serving.routing.router import Router
    from serving.routing.table import Group, RouteContext, RoutingTable, Rule
    from tenants.models import Tier

    targets = tuple(
        Target(
            f"d{i}",
            MODEL,
            MODEL,
            "local_worker",
            "http://x/v1",
            "",
            1 + i,
            64,
            8192,
            30.0,
            quality=0.8 + i * 0.05,
        )  # fmt: skip
        for i in range(4)
    )
    live = {t.name: DeploymentState(inflight=i % 3, ewma_ms=100.0 + 10 * i)
            for i, t in enumerate(targets)}  # fmt: skip
    from billing.pricing import Price

    prices = {t.name: Price(MODEL, 100_000 * (i + 1), 400_000, 100_000, None)
              for i, t in enumerate(targets)}  # fmt: skip
    rules = tuple(
        Rule(
            name=f"r{i}",
            position=i,
            target="g",
            metadata_key=f"k{i}",
            requested=frozenset({"auto"}),
        )
        for i in range(11)
    ) + (Rule(name="last", position=99, target="g", min_prompt_tokens=10),)
    tier = Tier(name="bench", allowed_models=[], allow_model_override=True, quality_floor=0.8)
    rows = []
    for strategy in ("weighted", "least_connections", "lowest_latency", "power_of_two",
                     "cheapest"):  # fmt: skip
        table = RoutingTable({"g": Group("g", strategy, targets)}, rules, prices)
        router = Router(random.Random(1))
        ctx = RouteContext(1, 1, "auto", 500, None, {"team": "x"})
        for _ in range(1000):  # warm up
            router.route(tier, "auto", table, ctx=ctx, live=live, max_output=256)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter_ns()
            route = router.route(tier, "auto", table, ctx=ctx, live=live, max_output=256)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        assert route.rule == "last"
        rows.append({"what": f"decision, {strategy}", "n": iterations,
                     "p50": pct(times, 50), "p99": pct(times, 99), "max": max(times)})  # fmt: skip
    return rows


def bench_live_state(iterations: int) -> dict:
    import redis.asyncio as aioredis
    from django.conf import settings

    from serving.routing.health import DeploymentHealth

    async def run() -> list[float]:
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        health = DeploymentHealth(client)
        names = [f"d{i}" for i in range(4)]
        for _ in range(200):
            await health.snapshot(names)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter_ns()
            await health.snapshot(names)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        await client.aclose()
        return times

    times = asyncio.run(run())
    return {"what": "live state from Redis (1 Lua call, 4 deployments)", "n": iterations,
            "p50": pct(times, 50), "p99": pct(times, 99), "max": max(times)}  # fmt: skip


# ---- 2. classifier -----------------------------------------------------------------------


def bench_classifier(rounds: int) -> list[dict]:
    from serving.routing.classifier import DATA_DIR, TaskClassifier
    from serving.routing.classifier_training import load_examples

    texts, labels = load_examples(DATA_DIR / "heldout.jsonl")
    rows = []
    for mode in ("embeddings", "heuristic"):
        clf = TaskClassifier(mode=mode)
        for t in texts[:20]:
            clf.classify(t)
        times, cpu, correct = [], [], 0
        for _ in range(rounds):
            for t, lab in zip(texts, labels, strict=True):
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                got, how = clf.classify(t)
                cpu.append((time.thread_time_ns() - c0) / 1e6)
                times.append((time.perf_counter_ns() - t0) / 1e6)
                correct += got == lab
        assert how == mode
        rows.append({"what": f"classifier, {mode}", "n": len(times), "p50": pct(times, 50),
                     "p99": pct(times, 99), "max": max(times), "cpu_p50": pct(cpu, 50),
                     "cpu_p99": pct(cpu, 99), "accuracy": correct / len(times)})  # fmt: skip
    return rows


# ---- 3. throughput with failover -----------------------------------------------------------


def _start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL)  # fmt: skip


async def _load(url: str, key: str, model: str, n: int, concurrency: int) -> dict:
    body = {"model": model, "max_tokens": 8,
            "messages": [{"role": "user", "content": "route me somewhere fast please"}]}  # fmt: skip
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    retried = errors = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one() -> None:
            nonlocal retried, errors
            async with sem:
                t0 = time.perf_counter()
                r = await client.post("/v1/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {key}"})  # fmt: skip
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                elif "attempts=" in r.headers.get("x-switchyard-route", ""):
                    retried += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
    return {"rps": n / wall, "p50": pct(lat, 50) * 1000, "p99": pct(lat, 99) * 1000,
            "retried": retried / n, "errors": errors}  # fmt: skip


def bench_throughput(n: int, concurrency: int, rounds: int) -> list[dict]:
    from django.db import connection

    from serving.routing.deployments import deployment_set
    from serving.routing.services import model_group_set
    from switchyard.embedded import free_port
    from switchyard.redis_client import get_redis
    from tenants import services
    from tenants.models import Tenant, Tier

    up_port = free_port()
    upstream = _start([sys.executable, "-m", "serving.instant_upstream", "--port", str(up_port)])
    up = f"http://127.0.0.1:{up_port}"
    deployment_set(name="bench-ok", model="bench-ok", base_url=f"{up}/v1")
    deployment_set(name="bench-fail", model="bench-fail", base_url=f"{up}/fail/v1", weight=1000)
    model_group_set(name="bench-failover", strategy="weighted", members=["bench-fail", "bench-ok"])
    Tenant.objects.filter(slug="bench-routing").delete()
    Tier.objects.filter(name="bench-routing").delete()
    tier = services.tier_create(name="bench-routing", requests_per_minute=10_000_000,
                                tokens_per_minute=1_000_000_000, tokens_per_day=10**12,
                                max_concurrent_requests=10_000,
                                # identical prompts would be answered by the semantic cache
                                exact_cache_enabled=False, semantic_cache_enabled=False)  # fmt: skip
    tenant = services.tenant_create(name="Bench", slug="bench-routing", tier=tier)
    _, key = services.api_key_create(tenant=tenant, name="bench")
    connection.close()

    gateways = {}
    for label, env in (("cooldown", {}), ("no-cooldown",
                       {"SWITCHYARD_COOLDOWN_FAILURES": "1000000000"})):  # fmt: skip
        port = free_port()
        proc = _start([sys.executable, "-m", "uvicorn", "switchyard.asgi:application", "--host",
                       "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level",
                       "warning"], env)  # fmt: skip
        gateways[label] = (proc, f"http://127.0.0.1:{port}")
    scenarios = [
        ("healthy group (no failover)", "cooldown", "bench-ok"),
        ("500 first, failover every request (cooldown off)", "no-cooldown", "bench-failover"),
        ("500 first, failover + cooldown (default)", "cooldown", "bench-failover"),
    ]
    results: dict[str, list[dict]] = {s[0]: [] for s in scenarios}
    try:
        for proc, url in gateways.values():
            wait_http(f"{url}/healthz", proc)
        wait_http(f"{up}/health", upstream)
        for _, url in gateways.values():
            asyncio.run(_load(url, key, "bench-ok", 100, concurrency))  # warm up
        for _ in range(rounds):
            for name, gw, model in scenarios:
                for k in get_redis().scan_iter("sy:dep:bench-*"):
                    get_redis().delete(k)
                results[name].append(asyncio.run(_load(gateways[gw][1], key, model, n,
                                                       concurrency)))  # fmt: skip
    finally:
        for proc, _ in gateways.values():
            stop_process(proc)
        stop_process(upstream)
    rows = []
    for name, runs in results.items():
        rows.append({"what": name, "rps": statistics.median(r["rps"] for r in runs),
                     "p50": statistics.median(r["p50"] for r in runs),
                     "p99": statistics.median(r["p99"] for r in runs),
                     "retried": statistics.mean(r["retried"] for r in runs),
                     "errors": sum(r["errors"] for r in runs)})  # fmt: skip
    return rows


def render(decisions: list[dict], classifier: list[dict], throughput: list[dict], args) -> str:
    lines = [
        "| measured | n | P50 ms | P99 ms | max ms | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in decisions:
        target = "P99 ≤ 1 ms" if r["what"].startswith("decision") else "(not in the target)"
        lines.append(f"| {r['what']} | {r['n']} | {r['p50']:.3f} | {r['p99']:.3f} | "
                     f"{r['max']:.3f} | {target} |")  # fmt: skip
    for r in classifier:
        target = "P99 ≤ 10 ms" if "embeddings" in r["what"] else "fallback"
        lines.append(f"| {r['what']} (held-out accuracy {r['accuracy']:.3f}), wall | {r['n']} | "
                     f"{r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} | {target} |")  # fmt: skip
        lines.append(f"| {r['what']}, CPU time of the calling thread (1 torch thread) | "
                     f"{r['n']} | {r['cpu_p50']:.3f} | {r['cpu_p99']:.3f} | | |")  # fmt: skip
    lines += [
        "",
        f"Throughput through one gateway process and the instant upstream ({args.requests} "
        f"chat requests at concurrency {args.concurrency}, medians of {args.rounds} rounds run "
        "side by side):",
        "",
        "| scenario | req/s | vs healthy | P50 ms | P99 ms | requests that failed over | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    base = throughput[0]["rps"]
    for r in throughput:
        lines.append(f"| {r['what']} | {r['rps']:.0f} | {r['rps'] / base:.2f}x | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {r['retried']:.0%} | {r['errors']} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--classifier-rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--write",
        action="store_true",
        help="write to benchmarks/RESULTS.md (replacing the section)",
    )
    args = parser.parse_args()
    services = setup_django()
    try:
        load = os.getloadavg()[0]
        decisions = bench_decisions(args.decisions) + [bench_live_state(5000)]
        classifier = bench_classifier(args.classifier_rounds)
        throughput = bench_throughput(args.requests, args.concurrency, args.rounds)
    finally:
        services.stop()
    table = render(decisions, classifier, throughput, args)
    table += (
        f"\n\nLoad average when the run started: {load:.1f} on {os.cpu_count()} cores "
        "(the machine is shared; wall-clock latencies include waiting for a core)."
    )
    print(table)
    if args.write:
        argv = " ".join(sys.argv[1:])
        write_section(
            "Routing",
            f"## Routing\n\nCommand: `.venv/bin/python -m benchmarks.routing.run {argv}` "
            f"(2-core machine, CPU; run on {dt.date.today().isoformat()}).\n\n{table}\n",
        )


if __name__ == "__main__":
    main()
