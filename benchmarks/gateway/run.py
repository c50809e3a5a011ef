"""Gateway overhead: direct calls vs through Switchyard vs through LiteLLM proxy, in one run.

    python -m benchmarks.gateway.run [--levels 1,50,100,200] [--duration 5] [--write]
        [--server uvicorn|granian] [--workers 1] [--proxy-cpus 1] [--client-cpus 0]

An instant OpenAI-compatible upstream (serving.instant_upstream) answers on loopback, so what is
measured is each proxy's own cost. The proxy under test (Switchyard's ASGI gateway, or LiteLLM's
proxy) and Switchyard's PostgreSQL and Redis run pinned to ``--proxy-cpus``; the upstream and the
load generator (benchmarks/gateway/loadgen.py) to ``--client-cpus``. Both proxies get the same
cores and the same number of worker processes.

Switchyard runs its whole pipeline: key auth, the four Redis rate limits, a hard monthly budget
reservation, validation, routing, the upstream call, settlement, a usage record and a
request-log entry per request. LiteLLM (installed by this script into its own virtualenv under
``.switchyard/bench/litellm-venv``) gets a master key, per-deployment rpm/tpm limits and a
proxy-wide max budget. LiteLLM's per-key virtual keys and budgets need its Prisma database
client, whose query-engine binary is downloaded from outside the package registries at set-up;
that is not possible here, so LiteLLM runs without them and does strictly less work per request
than Switchyard (said again under the table).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.gateway.loadgen import Result, load
from benchmarks.results import write_section
from switchyard.embedded import data_dir, ensure_services, free_port
from switchyard.processes import stop_process, wait_http

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
LITELLM_SPEC = "litellm[proxy]"
TARGETS = ("direct", "switchyard", "litellm")


def _pinned(cpus: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def litellm_python(bench_dir: Path) -> Path:
    """LiteLLM's proxy in its own virtualenv (installed once)."""
    venv = bench_dir / "litellm-venv"
    py = venv / "bin" / "python"
    if not (venv / "bin" / "litellm").exists():
        print(f"installing {LITELLM_SPEC} into {venv} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", LITELLM_SPEC], check=True)
    return py


def litellm_version(py: Path) -> str:
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


def seed_switchyard(upstream: str) -> str:
    """Tenant, tier (limits far above the load), hard budget, price and deployment; returns a
    new API key."""
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
        requests_per_minute=100_000_000,
        tokens_per_minute=2_000_000_000,
        tokens_per_day=4_000_000_000,
        max_concurrent_requests=10_000,
        allowed_models=[MODEL],
        default_model=MODEL,
        # The caches would answer these identical requests themselves; LiteLLM runs without
        # one too. Cache-hit latency has its own benchmark (benchmarks/cache).
        exact_cache_enabled=False,
        semantic_cache_enabled=False,
    )
    tier = Tier.objects.filter(name="bench").first()
    tier = (
        services.tier_update(tier=tier, **limits)
        if tier
        else services.tier_create(name="bench", **limits)
    )
    tenant = Tenant.objects.filter(slug="bench").first() or services.tenant_create(
        name="Bench", slug="bench", tier=tier
    )
    services.budget_set(tenant=tenant, period="monthly", limit_micro_usd=10**15, hard=True)
    if not ModelPrice.objects.filter(model=MODEL).exists():
        ModelPrice.objects.create(
            model=MODEL, input_micro_usd_per_mtok=100_000, output_micro_usd_per_mtok=400_000
        )
    for dep in ("bench-instant",):
        deployment_set(name=dep, model=MODEL, base_url=f"{upstream}/v1", context_window=8192)
    _, raw = services.api_key_create(tenant=tenant, name="bench")
    return raw


def service_pids(services) -> list[int]:
    """The embedded PostgreSQL's postmaster (backends fork from it) and Redis."""
    pids: list[int] = []
    for svc in services.started:
        proc = getattr(svc, "proc", None) or getattr(svc, "_proc", None)
        if proc is not None:
            pids.append(proc.pid)
        pidfile = getattr(svc, "data_dir", Path("/nonexistent")) / "postmaster.pid"
        if pidfile.exists():
            pids.append(int(pidfile.read_text().split()[0]))
    return pids


def pin_services(services, cpus: str) -> None:
    """Pin the embedded PostgreSQL and Redis to ``cpus``."""
    if not cpus:
        return
    for pid in service_pids(services):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True)


def start_switchyard(port: int, args) -> subprocess.Popen:
    env = dict(os.environ, DEBUG="0", PYTHONUNBUFFERED="1")
    if args.server == "granian":
        if importlib.util.find_spec("granian") is None:
            sys.exit("--server granian needs granian: .venv/bin/pip install granian")
        argv = [
            sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(args.workers), "--loop", "uvloop",
            "--no-ws", "--log-level", "warning", "switchyard.asgi:application",
        ]  # fmt: skip
    else:
        argv = [
            sys.executable, "-m", "uvicorn", "switchyard.asgi:application", "--host",
            "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
            "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http",
            "httptools",
        ]  # fmt: skip
    return subprocess.Popen(_pinned(args.proxy_cpus, argv), cwd=ROOT, env=env)


def start_litellm(py: Path, port: int, upstream: str, master_key: str, args) -> subprocess.Popen:
    cfg = data_dir() / "bench" / "litellm.yaml"
    cfg.write_text(
        f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {upstream}/v1
      api_key: none
      rpm: 100000000
      tpm: 2000000000
litellm_settings:
  max_budget: 1000000000
  budget_duration: 30d
  drop_params: true
  telemetry: false
general_settings:
  master_key: {master_key}
"""
    )
    env = dict(
        os.environ,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
        PYTHONUNBUFFERED="1",
    )
    env.pop("DATABASE_URL", None)  # LiteLLM would try its Prisma client on it
    env.pop("REDIS_URL", None)
    argv = [
        str(py.parent / "litellm"), "--config", str(cfg), "--host", "127.0.0.1",
        "--port", str(port), "--num_workers", str(args.workers),
    ]  # fmt: skip
    log = open(data_dir() / "bench" / "litellm.log", "w")  # noqa: SIM115
    return subprocess.Popen(
        _pinned(args.proxy_cpus, argv), env=env, stdout=log, stderr=subprocess.STDOUT
    )


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process and its children (workers), in seconds."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
        return total
    except psutil.Error:
        return 0.0


MAX_TOKENS = 16


def payload(stream: bool) -> dict:
    # The instant upstream echoes the prompt, one word a token, up to max_tokens. Words of
    # letters, like most model output (digits and "@" make the PII filter look closer).
    words = " ".join("abcdefghij"[i % 10] * (1 + i % 3) for i in range(MAX_TOKENS))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Say hello to the benchmark: {words}"}],
        "max_tokens": MAX_TOKENS,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def check_once(url: str, key: str, stream: bool) -> None:
    """One request through ``url`` must succeed (and stream when asked) before timing it."""
    with httpx.Client(timeout=30) as c:
        r = c.post(url, json=payload(stream), headers={"Authorization": f"Bearer {key}"})
    if r.status_code != 200 or (stream and "data: [DONE]" not in r.text):
        raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:300]}")


def fmt_row(
    target: str, mode: str, conc: int, res: Result, direct: Result | None, cpu_ms: float
) -> str:
    s = res.summary()
    if direct is not None and target != "direct":
        d = direct.summary()
        added = f"{s['p50_ms'] - d['p50_ms']:7.2f} | {s['p99_ms'] - d['p99_ms']:7.2f}"
    else:
        added = "      - |       -"
    return (
        f"| {target:10} | {mode:6} | {conc:4d} | {s['rps']:8.0f} | {s['p50_ms']:7.2f} | "
        f"{s['p99_ms']:7.2f} | {added} | {cpu_ms:6.2f} | {int(s['errors'])} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,50,100,200")
    ap.add_argument("--modes", default="json,stream")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--proxy-cpus", default="1", help="taskset list for the proxies ('' = all)")
    ap.add_argument("--client-cpus", default="0", help="taskset list for upstream and client")
    ap.add_argument("--max-tokens", type=int, default=16, help="tokens per response")
    ap.add_argument("--write", action="store_true", help="write the table to RESULTS.md")
    a = ap.parse_args()
    global MAX_TOKENS
    MAX_TOKENS = a.max_tokens
    levels = [int(x) for x in a.levels.split(",")]
    modes = a.modes.split(",")
    targets = [t for t in TARGETS if t in a.targets.split(",")]
    bench_dir = data_dir() / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)

    services = ensure_services(scope="bench", persistent=False)
    procs: list[subprocess.Popen] = []
    try:
        pin_services(services, a.proxy_cpus)
        up_port = free_port()
        upstream_proc = subprocess.Popen(
            _pinned(
                a.client_cpus,
                [sys.executable, "-m", "serving.instant_upstream", "--port", str(up_port)],
            ),
            cwd=ROOT,
        )
        procs.append(upstream_proc)
        upstream = f"http://127.0.0.1:{up_port}"
        wait_http(f"{upstream}/health", upstream_proc)
        urls = {"direct": f"{upstream}/v1/chat/completions"}
        pids: dict[str, int | None] = {"direct": None}
        keys = {"direct": "none"}
        if "switchyard" in targets:
            keys["switchyard"] = seed_switchyard(upstream)
            port = free_port()
            proc = start_switchyard(port, a)
            procs.append(proc)
            pids["switchyard"] = proc.pid
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            urls["switchyard"] = f"http://127.0.0.1:{port}/v1/chat/completions"
        version = "-"
        if "litellm" in targets:
            py = litellm_python(bench_dir)
            version = litellm_version(py)
            keys["litellm"] = "sk-bench-" + secrets.token_hex(8)
            port = free_port()
            proc = start_litellm(py, port, upstream, keys["litellm"], a)
            procs.append(proc)
            pids["litellm"] = proc.pid
            wait_http(
                f"http://127.0.0.1:{port}/health/liveliness",
                proc,
                timeout=300,
                headers={"Authorization": f"Bearer {keys['litellm']}"},
            )
            urls["litellm"] = f"http://127.0.0.1:{port}/v1/chat/completions"
        if a.client_cpus:
            os.sched_setaffinity(0, {int(c) for c in a.client_cpus.split(",")})
        for t in targets:
            for mode in modes:
                check_once(urls[t], keys[t], mode == "stream")

        header = (
            "| target     | mode   | conc |    req/s | P50 ms  | P99 ms  | +P50 ms | +P99 ms | "
            "CPU ms/req | errors |\n|---|---|---|---|---|---|---|---|---|---|"
        )
        print(header, flush=True)
        rows: list[str] = []
        results: dict[tuple[str, str, int], Result] = {}
        cpu: dict[tuple[str, str, int], float] = {}
        for mode in modes:
            for conc in levels:
                for t in targets:
                    cpu0 = cpu_seconds(pids[t])
                    res = load(
                        urls[t],
                        payload(mode == "stream"),
                        headers={"Authorization": f"Bearer {keys[t]}"},
                        concurrency=conc,
                        duration=a.duration,
                        warmup=a.warmup,
                    )
                    # CPU of the proxy per request served (whole cell, warm-up included):
                    # unlike req/s it does not depend on what else shares the machine.
                    served = res.ok + res.warm_ok
                    cpu_ms = 1e3 * (cpu_seconds(pids[t]) - cpu0) / max(1, served)
                    results[(t, mode, conc)] = res
                    cpu[(t, mode, conc)] = cpu_ms
                    row = fmt_row(t, mode, conc, res, results.get(("direct", mode, conc)), cpu_ms)
                    rows.append(row)
                    print(row, flush=True)
        summary = summarize(results, cpu, modes, levels, targets)
        print("\n" + summary)
        if a.write:
            write_section("Gateway", report(a, rows, summary, header, version))
    finally:
        for p in reversed(procs):
            stop_process(p)
        services.stop()


def summarize(results, cpu, modes, levels, targets) -> str:
    if not {"switchyard", "litellm", "direct"} <= set(targets):
        return ""
    lines = [
        "| mode | conc | Switchyard / LiteLLM added P50 | added P99 | req/s | CPU per request |",
        "|---|---|---|---|---|---|",
    ]
    for mode in modes:
        for conc in levels:
            d = results[("direct", mode, conc)].summary()
            s = results[("switchyard", mode, conc)].summary()
            ll = results[("litellm", mode, conc)].summary()

            def ratio(x: float, y: float) -> str:
                return f"{x / y:.2f}" if y > 0 else "-"

            lines.append(
                f"| {mode} | {conc} | {ratio(s['p50_ms'] - d['p50_ms'], ll['p50_ms'] - d['p50_ms'])}"
                f" | {ratio(s['p99_ms'] - d['p99_ms'], ll['p99_ms'] - d['p99_ms'])}"
                f" | {ratio(s['rps'], ll['rps'])}"
                f" | {ratio(cpu[('switchyard', mode, conc)], cpu[('litellm', mode, conc)])} |"
            )
    return "\n".join(lines)


def report(a, rows: list[str], summary: str, header: str, litellm_ver: str) -> str:
    cmd = "python -m benchmarks.gateway.run " + " ".join(sys.argv[1:])
    return "\n".join(
        [
            "## Gateway",
            "",
            f"`{cmd.strip()}` on {platform.machine()}, {os.cpu_count()} CPUs "
            f"({time.strftime('%Y-%m-%d')}). Server: {a.server}, {a.workers} worker(s); "
            f"proxies (and Switchyard's PostgreSQL and Redis) pinned to CPU {a.proxy_cpus or 'all'},"
            f" instant upstream and load generator to CPU {a.client_cpus or 'all'}. LiteLLM "
            f"{litellm_ver}. Closed loop, {a.duration:g} s per cell after {a.warmup:g} s warm-up;"
            " +P50/+P99: latency added over direct calls at the same concurrency.",
            "",
            header,
            *rows,
            "",
            "Ratios, Switchyard over LiteLLM (added latency and CPU per request: below 1 is "
            "better; req/s: above 1 is better). CPU ms/req is the proxy's own CPU time "
            "(all its processes) per request served, which unlike req/s does not depend on "
            "what else shares the machine.",
            "",
            summary,
            "",
            "LiteLLM ran with a master key, per-deployment rpm/tpm and a proxy-wide budget; its "
            "virtual keys and per-key budgets need its Prisma database client, which cannot be "
            "installed offline here, so it did less work per request than Switchyard (key "
            "lookup, four Redis rate limits, hard budget reservation, usage record and request "
            "log on every request).",
        ]
    )


if __name__ == "__main__":
    main()
