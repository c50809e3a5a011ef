"""Hardening: what hostile tenants cost honest ones, in one run.

    python -m benchmarks.hardening.run [--duration 5] [--requests 10000] [--write]

One gateway process (uvicorn, pinned to core 0 where there are two) in front of the instant
upstream; an honest tenant drives a closed loop of chat requests (8 connections) while a
``/healthz`` probe runs every 20 ms. First alone, then beside each attack of the hardening
issue, sent by a hostile tenant (or an unauthenticated client) as fast as 4 connections
allow. Reported per attack: the honest tenant's throughput against alone (target ≥ 0.8×)
and the probe's P50/P99 (what the event loop's lag costs every tenant). Last, 10,000 requests
that all carry the same ``X-Request-Id`` are matched against the usage records they produced
(target: exactly equal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from benchmarks.gateway.loadgen import run_load
from benchmarks.results import write_section
from switchyard.embedded import ensure_services, free_port
from switchyard.processes import stop_process, wait_http

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
HONEST_BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Say hello to the benchmark please"}],
    "max_tokens": 16,
}
ATTACKERS = 4


def seed(upstream: str) -> tuple[str, str, int]:
    """Honest and hostile tenants: (honest key, hostile key, honest tenant id). The honest
    tier's limits are far above the load; the hostile tier's are an ordinary plan's."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
    django.setup()
    from django.core.management import call_command

    from billing.models import ModelPrice
    from serving.routing.deployments import deployment_set
    from tenants import services
    from tenants.models import Tenant, Tier

    call_command("migrate", verbosity=0)
    limits = dict(
        requests_per_minute=10_000_000,
        tokens_per_minute=2_000_000_000,
        tokens_per_day=4_000_000_000,
        max_concurrent_requests=10_000,
        allowed_models=[MODEL],
        default_model=MODEL,
        exact_cache_enabled=False,
        semantic_cache_enabled=False,
    )
    # The hostile tenant pays for an ordinary plan: its limits bound what it can send.
    hostile_limits = dict(
        limits, requests_per_minute=600, tokens_per_minute=200_000, max_concurrent_requests=8
    )
    keys = []
    for slug in ("honest", "hostile"):
        tier_limits = hostile_limits if slug == "hostile" else limits
        tier = Tier.objects.filter(name=f"hardening-{slug}").first()
        tier = (
            services.tier_update(tier=tier, **tier_limits)
            if tier
            else services.tier_create(name=f"hardening-{slug}", **tier_limits)
        )
        tenant = Tenant.objects.filter(slug=f"hardening-{slug}").first() or (
            services.tenant_create(name=slug.title(), slug=f"hardening-{slug}", tier=tier)
        )
        services.budget_set(tenant=tenant, period="monthly", limit_micro_usd=10**15, hard=True)
        _, raw = services.api_key_create(tenant=tenant, name="bench")
        keys.append((raw, tenant.pk))
    if not ModelPrice.objects.filter(model=MODEL).exists():
        ModelPrice.objects.create(
            model=MODEL, input_micro_usd_per_mtok=100_000, output_micro_usd_per_mtok=400_000
        )
    deployment_set(
        name="bench-instant", model=MODEL, base_url=f"{upstream}/v1", context_window=8192
    )
    return keys[0][0], keys[1][0], keys[0][1]


def _pinned(cpus: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus and (os.cpu_count() or 1) > 1 else argv


# ---- attacks: each sends one hostile request with a shared client ------------------------


def _chat(url: str, key: str, body: dict | bytes, headers: dict | None = None):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
    return url + "/v1/chat/completions", content, h


def attacks(url: str, key: str) -> dict[str, Callable[[int], tuple[str, bytes, dict]]]:
    nested = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    digits = {"model": MODEL, "messages": [{"role": "user", "content": "7" * 1_000_000}]}
    return {
        "same X-Request-Id on every call": lambda i: _chat(
            url, key, HONEST_BODY, {"X-Request-Id": "same"}
        ),
        "max-cost header 1e999999": lambda i: _chat(
            url, key, HONEST_BODY, {"X-Switchyard-Max-Cost-Usd": "1e999999"}
        ),
        "temperature 1e-300": lambda i: _chat(url, key, {**HONEST_BODY, "temperature": 1e-300}),
        "1 MB prompt of digits (PII scan)": lambda i: _chat(url, key, digits),
        "JSON nested 100,000 deep": lambda i: _chat(url, key, nested),
        "NUL in the model name": lambda i: _chat(url, key, {**HONEST_BODY, "model": "x\u0000y"}),
        "random API keys (auth flood)": lambda i: _chat(
            url, f"sy-{os.urandom(24).hex()}", HONEST_BODY
        ),
    }


async def _attack_loop(make: Callable[[int], tuple[str, bytes, dict]], stop_at: float) -> dict:
    counts: dict[int, int] = {}
    async with httpx.AsyncClient(timeout=30) as client:

        async def one() -> None:
            i = 0
            while time.perf_counter() < stop_at:
                target, content, headers = make(i)
                i += 1
                try:
                    r = await client.post(target, content=content, headers=headers)
                    counts[r.status_code] = counts.get(r.status_code, 0) + 1
                except httpx.HTTPError:
                    counts[0] = counts.get(0, 0) + 1

        await asyncio.gather(*(one() for _ in range(ATTACKERS)))
    return counts


async def _oversized_loop(url: str, stop_at: float) -> dict:
    """Claims a 100 MB body and sends none of it: refused at the edge, unauthenticated."""
    counts: dict[int, int] = {}
    host, port = url.split("//")[1].split(":")
    while time.perf_counter() < stop_at:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        status = int(line.split()[1]) if line else 0
        counts[status] = counts.get(status, 0) + 1
        writer.close()
    return counts


async def _probe(url: str, stop_at: float) -> list[float]:
    out: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await client.get(url + "/healthz")
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)
    return out


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


async def scenario(
    url: str, honest_key: str, duration: float, attack: Callable[[float], Awaitable] | None
) -> dict:
    start = time.perf_counter()
    stop_at = start + 1.0 + duration
    jobs = [
        run_load(
            url + "/v1/chat/completions",
            HONEST_BODY,
            headers={"Authorization": f"Bearer {honest_key}"},
            concurrency=8,
            duration=duration,
            warmup=1.0,
        ),
        _probe(url, stop_at),
    ]
    if attack is not None:
        jobs.append(attack(stop_at))
    results = await asyncio.gather(*jobs)
    honest, probe = results[0], results[1]
    return {
        "rps": honest.rps,
        "honest_errors": sum(honest.errors.values()),
        "probe_p50_ms": 1e3 * _pct(probe, 50),
        "probe_p99_ms": 1e3 * _pct(probe, 99),
        "attack": results[2] if attack is not None else {},
    }


async def hostile_ids(url: str, key: str, tenant_id: int, n: int) -> tuple[int, int]:
    """``n`` requests with one X-Request-Id, 16 at a time; (answered 200, usage records)."""
    from asgiref.sync import sync_to_async

    from billing.models import UsageRecord
    from billing.usage import usage_ingestor
    from switchyard.redis_client import get_redis

    def drained() -> int:
        while usage_ingestor.drain(get_redis()):
            pass
        return UsageRecord.objects.filter(tenant_id=tenant_id).count()

    before = await sync_to_async(drained)()
    ok = 0
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one() -> None:
            nonlocal ok
            async with sem:
                target, content, headers = _chat(url, key, HONEST_BODY, {"X-Request-Id": "dup"})
                r = await client.post(target, content=content, headers=headers)
                ok += r.status_code == 200

        await asyncio.gather(*(one() for _ in range(n)))
    after = await sync_to_async(drained)()
    return ok, after - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--write", action="store_true", help="rewrite RESULTS.md's section")
    args = parser.parse_args()

    services = ensure_services(scope="bench", persistent=False)
    upstream_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    url = f"http://127.0.0.1:{gw_port}"
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                _pinned(
                    "1",
                    [
                        sys.executable,
                        "-m",
                        "serving.instant_upstream",
                        "--port",
                        str(upstream_port),
                    ],
                ),  # fmt: skip
                cwd=ROOT,
            )
        )
        wait_http(f"{upstream}/health", procs[-1])
        honest_key, hostile_key, honest_tenant = seed(upstream)
        env = dict(os.environ, DEBUG="0", PYTHONUNBUFFERED="1")
        procs.append(
            subprocess.Popen(
                _pinned(
                    "0",
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "switchyard.asgi:application",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(gw_port),
                        "--no-access-log",
                        "--log-level",
                        "warning",
                    ],
                ),  # fmt: skip
                cwd=ROOT,
                env=env,
            )
        )
        wait_http(f"{url}/healthz", procs[-1])
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})

        rows = []
        # Warm the gateway first (tables, connection pools, the metering tokenizer it loads
        # in the background at start): a cold process would make "alone" look slow.
        asyncio.run(scenario(url, honest_key, max(3.0, args.duration), None))
        alone = asyncio.run(scenario(url, honest_key, args.duration, None))
        rows.append(("alone", alone))
        print(f"alone: {alone['rps']:.0f} req/s, probe P99 {alone['probe_p99_ms']:.1f} ms")
        named = dict(attacks(url, hostile_key))
        for name, make in named.items():
            res = asyncio.run(
                scenario(url, honest_key, args.duration, lambda stop, m=make: _attack_loop(m, stop))
            )
            rows.append((name, res))
            print(f"{name}: {res['rps']:.0f} req/s, probe P99 {res['probe_p99_ms']:.1f} ms, "
                  f"attack answers {res['attack']}")  # fmt: skip
        res = asyncio.run(
            scenario(url, honest_key, args.duration, lambda stop: _oversized_loop(url, stop))
        )
        rows.append(("100 MB Content-Length, unauthenticated", res))
        print(f"oversized: {res['rps']:.0f} req/s, attack answers {res['attack']}")
        # A tenant whose limits let all of them through, every one with the same id.
        served, records = asyncio.run(hostile_ids(url, honest_key, honest_tenant, args.requests))
        print(f"{args.requests} requests with one X-Request-Id: {served} served, {records} usage")
    finally:
        for p in reversed(procs):
            stop_process(p)
        services.stop()

    isa = "AVX-512" if "avx512f" in Path("/proc/cpuinfo").read_text() else "AVX2"
    lines = [
        "## Hardening",
        "",
        f"`python -m benchmarks.hardening.run --duration {args.duration:g} --requests "
        f"{args.requests}{' --write' if args.write else ''}`, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores ({platform.machine()}, {isa}); one uvicorn gateway process "
        "pinned to core 0, the upstream, the honest load (8 connections), the /healthz probe "
        f"(every 20 ms) and the attackers ({ATTACKERS} connections) on core 1.",
        "",
        "| attack (hostile tenant) | honest req/s | vs alone | /healthz P50 | /healthz P99 "
        "| attack answers |",
        "|---|---|---|---|---|---|",
    ]
    base = alone["rps"] or float("nan")
    for name, r in rows:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["attack"].items())) or "—"
        lines.append(
            f"| {name} | {r['rps']:.0f} | {r['rps'] / base:.2f}× | {r['probe_p50_ms']:.1f} ms "
            f"| {r['probe_p99_ms']:.1f} ms | {answers} |"
        )
    ratios = [r["rps"] / base for name, r in rows[1:]]
    lines += [
        "",
        f"Worst honest throughput beside an attack: {min(ratios):.2f}× alone (target ≥ 0.8×); "
        f"median {statistics.median(ratios):.2f}×.",
        "",
        f"Usage against service with hostile ids: {args.requests} requests carrying the same "
        f"`X-Request-Id`: {served} answered 200, {records} usage records "
        f"({'exactly equal' if served == records else 'NOT EQUAL'}).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("Hardening", text)


if __name__ == "__main__":
    main()
