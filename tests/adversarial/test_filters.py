"""A hostile tenant against the content filters: prompts built to make the PII patterns and
the blocklist backtrack. Every scan is linear now; before, a megabyte of "+" and digits cost
2.3 s in the phone pattern and a 1,000-term blocklist 2 s over a megabyte of prose, on the
event loop every tenant shares.

The bounds are generous (0.5 s for a megabyte, which the linear scans pass several times
over on a loaded 2-core machine) and cannot be met by the backtracking patterns. The timings
themselves are in benchmarks/RESULTS.md ("Hardening"), from ``python -m
benchmarks.hardening.filters``.
"""

from __future__ import annotations

import random
import string
import time

import pytest

from serving.gateway.filters import blocked_term, redact
from serving.routing.deployments import deployment_set
from tests.gateway_fixtures import MODEL

MIB = 1 << 20
BOUND_S = 0.5


def _fill(unit: str, size: int = MIB) -> str:
    return (unit * (size // len(unit) + 1))[:size]


MIXED = (
    "Call +1 415 555 2671 or mail jo.doe@example.com; card 4111 1111 1111 1111, ssn "
    "123-45-6789. Order 12345 shipped 2026-11-25 to Leeds; see version 3.11.7 and NI AB 12 34 "
    "56 C. "
)
ATTACKS = {
    "digits": "1" * MIB,
    "plus and 30 digits": _fill("+" + "1" * 30 + " "),
    "plus and digit groups": _fill("+12 345 678 901 234 567 x "),
    "a@ repeats": _fill("a@"),
    "dotted local parts": _fill("a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a@"),
    "digits and spaces": _fill("1 "),
    "mixed text": _fill(MIXED),
}


def _cpu_seconds(fn, *args) -> float:
    """The best of three runs, in CPU time of this process (other tests share the cores)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - t0)
    return best


@pytest.mark.parametrize("name", list(ATTACKS))
def test_redacting_a_mebibyte_is_linear(name):
    seconds = _cpu_seconds(redact, ATTACKS[name])
    assert seconds < BOUND_S, f"{name}: {seconds * 1000:.0f} ms for 1 MiB"


def test_redaction_still_finds_what_it_should_in_the_attack_text():
    out = redact(MIXED)
    for secret in ("415 555", "jo.doe", "4111", "123-45", "AB 12"):
        assert secret not in out
    assert "2026-11-25" in out and "3.11.7" in out  # not PII, kept


def test_a_thousand_term_blocklist_over_a_mebibyte_is_linear():
    rng = random.Random(7)
    terms = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 10))) for _ in range(1000)
    ]
    text = _fill("the quick brown fox jumps over the lazy dog ")
    assert _cpu_seconds(blocked_term, [text], terms) < BOUND_S
    assert blocked_term([text + " " + terms[500].upper()], terms) == terms[500].upper()


def test_the_attack_through_the_gateway_costs_what_plain_text_costs(make_caller, upstream_url):
    """A near-megabyte prompt built for the old patterns, to a tier with PII redaction and a
    long blocklist, on a deployment whose window lets it reach the filters: answered about as
    fast as plain text of the same size (the old phone pattern alone added 2.3 s)."""
    rng = random.Random(11)
    blocklist = ["".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(1000)]
    caller = make_caller(
        pii_redaction=True,
        blocklist=blocklist,
        requests_per_minute=1000,
        tokens_per_minute=2_000_000_000,
        tokens_per_day=4_000_000_000,
    )
    deployment_set(
        name="instant", model=MODEL, base_url=f"{upstream_url}/v1", context_window=10_000_000
    )
    size = 900_000

    def ask(prompt: str) -> float:
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1}
        t0 = time.perf_counter()
        r = caller.post("/chat/completions", json=body)
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200, r.text[:300]
        return elapsed

    plain = min(ask(_fill("hello world, nothing to see here. ", size)) for _ in range(2))
    attack = min(ask(_fill("+" + "1" * 30 + " ", size)) for _ in range(2))
    assert attack < plain + 0.75, f"attack {attack:.2f} s, plain text {plain:.2f} s"
