"""API price vs self-hosting: what a million tokens costs on your own GPU, and the monthly
volume from which self-hosting is cheaper.

One GPU delivers ``tokens_per_second`` at full load; at ``utilisation`` (the share of the
month it does useful work) it serves ``capacity = tokens_per_second * utilisation * 3600 *
730 / 1e6`` million tokens a month and costs ``fixed = gpu_usd_per_hour * 730`` a month,
whatever it serves. Self-hosting ``V`` Mtok a month needs ``ceil(V / capacity)`` GPUs; the API
costs ``V * api_usd_per_mtok``. The self-hosted cost per Mtok at capacity is
``fixed / capacity``; when it is below the API price, self-hosting wins from
``V* = fixed / api_usd_per_mtok`` on (where one GPU's cost equals the API bill), else never.
Money is ``Decimal``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from django.conf import settings

HOURS_PER_MONTH = Decimal(730)
RESULTS = Path(settings.BASE_DIR) / "benchmarks" / "RESULTS.md"


@dataclass(frozen=True)
class CrossoverInputs:
    api_usd_per_mtok: Decimal
    gpu_usd_per_hour: Decimal
    utilisation: Decimal  # 0 < u <= 1
    tokens_per_second: Decimal


@dataclass(frozen=True)
class Crossover:
    inputs: CrossoverInputs
    capacity_mtok_per_month: Decimal  # one GPU
    gpu_usd_per_month: Decimal
    self_hosted_usd_per_mtok: Decimal
    break_even_mtok_per_month: Decimal | None  # None: the API is always cheaper

    def api_cost(self, mtok: Decimal) -> Decimal:
        return mtok * self.inputs.api_usd_per_mtok

    def gpus_needed(self, mtok: Decimal) -> int:
        return max(1, math.ceil(mtok / self.capacity_mtok_per_month)) if mtok > 0 else 0

    def self_hosted_cost(self, mtok: Decimal) -> Decimal:
        return self.gpus_needed(mtok) * self.gpu_usd_per_month

    def curve(self, points: int = 60) -> list[tuple[Decimal, Decimal, Decimal]]:
        """(Mtok a month, API $, self-hosted $) from zero to past the break-even."""
        reach = self.break_even_mtok_per_month or self.capacity_mtok_per_month
        top = max(reach * 2, self.capacity_mtok_per_month * Decimal("1.5"))
        step = top / points
        return [
            (v, self.api_cost(v), self.self_hosted_cost(v))
            for v in (step * i for i in range(points + 1))
        ]


def crossover(inputs: CrossoverInputs) -> Crossover:
    seconds = HOURS_PER_MONTH * 3600
    capacity = inputs.tokens_per_second * inputs.utilisation * seconds / Decimal(1_000_000)
    fixed = inputs.gpu_usd_per_hour * HOURS_PER_MONTH
    per_mtok = fixed / capacity
    wins = per_mtok < inputs.api_usd_per_mtok
    return Crossover(
        inputs=inputs,
        capacity_mtok_per_month=capacity,
        gpu_usd_per_month=fixed,
        self_hosted_usd_per_mtok=per_mtok.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP),
        break_even_mtok_per_month=(fixed / inputs.api_usd_per_mtok) if wins else None,
    )


@dataclass(frozen=True)
class MeasuredThroughput:
    label: str
    tokens_per_second: Decimal


_ROW = re.compile(r"^\|\s*Switchyard continuous\s*\|\s*(\d+)\s*\|[^|]*\|[^|]*\|\s*([\d.]+)\s*\|")


def engine_throughputs(path: Path = RESULTS) -> list[MeasuredThroughput]:
    """Output tokens/s of the engine benchmark's continuous-batching rows, newest run of each
    stream count (later sections of RESULTS.md are newer runs), fastest first."""
    try:
        text = path.read_text()
    except OSError:
        return []
    by_streams: dict[int, tuple[str, Decimal]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        m = _ROW.match(line)
        if m and section.lower().startswith("engine"):
            by_streams[int(m.group(1))] = (section, Decimal(m.group(2)))
    # Fastest first: the default is the best the engine has shown.
    return [
        MeasuredThroughput(f"{tps} output tok/s at {n} streams ({sec})", tps)
        for n, (sec, tps) in sorted(by_streams.items(), key=lambda kv: -kv[1][1])
    ]


def deployment_throughputs(*, days: int = 7) -> list[MeasuredThroughput]:
    """Each deployment's busiest hour of the last ``days`` days, as output tokens per second
    (from the usage rollups). It is what the deployment has delivered, a lower bound of what it
    can: a deployment never driven to full load shows less than its capacity."""
    from billing import selectors

    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    rows = selectors.usage(
        start=end - dt.timedelta(days=days),
        end=end,
        granularity="hour",
        group_by=("bucket", "deployment"),
    )
    peak: dict[str, tuple[int, dt.datetime]] = {}
    for r in rows:
        if r.deployment and r.output_tokens > peak.get(r.deployment, (0, end))[0]:
            peak[r.deployment] = (r.output_tokens, r.bucket)
    out = []
    for name, (tokens, hour) in sorted(peak.items(), key=lambda kv: -kv[1][0]):
        tps = (Decimal(tokens) / 3600).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        if tps > 0:
            out.append(
                MeasuredThroughput(
                    f"{tps} output tok/s: deployment {name}, busiest hour "
                    f"{hour:%Y-%m-%d %H}:00 UTC (live usage)",
                    tps,
                )
            )
    return out
