"""PII detection and redaction, blocklists and JSON checks (plain functions)."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.gateway.filters import (
    StreamRedactor,
    _matches,
    blocked_term,
    blocklist_pattern,
    find_pii,
    is_valid_json,
    luhn_ok,
    redact,
)


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("write to jane.doe@example.com today", ["email"]),
        ("card 4111 1111 1111 1111 exp 12/29", ["card"]),
        ("card 4111-1111-1111-1112 is not valid", []),
        ("ssn 123-45-6789", ["national_id"]),
        ("NI number AB 12 34 56 C", ["national_id"]),
        ("call +44 20 7946 0958 or (415) 555-2671", ["phone", "phone"]),
        ("order 12345 shipped on 2026-11-25", []),
        ("version 3.11.7 and port 8000", []),
    ],
)
def test_find_pii(text, kinds):
    assert find_pii(text) == kinds


def test_redact_replaces_every_kind():
    text = "mail a@b.io, card 5500 0000 0000 0004, ssn 123-45-6789, tel 415-555-2671."
    assert redact(text) == "mail [EMAIL], card [CARD], ssn [NATIONAL_ID], tel [PHONE]."


def test_luhn():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_stream_redaction_matches_whole_text_redaction(size):
    text = (
        "Contact me at someone.special@example.org or +1 415 555 2671; my card is "
        "4111 1111 1111 1111 and that is all. " * 3
    )
    red = StreamRedactor()
    out = "".join(red.feed(text[i : i + size]) for i in range(0, len(text), size)) + red.flush()
    assert out == redact(text)
    assert "example.org" not in out and "4111" not in out


def test_blocklist_matches_whole_words_case_insensitively():
    assert blocked_term(["Tell me about Project Zeus"], ["project zeus"]) == "Project Zeus"
    assert blocked_term(["zeusian times"], ["zeus"]) is None
    assert blocked_term(["anything"], []) is None


def test_json_validity():
    assert is_valid_json('{"a": 1}') and not is_valid_json("{a: 1}")
    assert not is_valid_json("NaN") and not is_valid_json("")


def test_json_check_of_deeply_nested_output_is_false_not_a_recursion_error():
    # A model asked for JSON can be asked for a hundred thousand brackets as well.
    assert not is_valid_json("[" * 100_000 + "]" * 100_000)
    assert is_valid_json("[" * 500 + "]" * 500)


# --- the linear-time scanners find what the first patterns found --------------------------
# These are the first patterns of serving/gateway/filters.py: correct, but they backtrack
# (the phone pattern cost 2.3 s on a megabyte of "+" and digits). On short text they are the
# reference the linear-time scanners must agree with.
_REF_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,32}@[A-Za-z0-9.-]{1,32}\.[A-Za-z]{2,6}\b")
_REF_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_REF_NATIONAL_ID = re.compile(
    r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"
    r"|\b[A-CEGHJ-PR-TW-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b"
)
_REF_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,4}\b"
    r"|(?<!\w)\(\d{3}\)\s?\d{3}[\s.-]\d{4}\b"
    r"|\b\d{3}[.-]\d{3}[.-]\d{4}\b"
)


def _reference_pii(text: str) -> list[tuple[int, int, str]]:
    found = [(*m.span(), "email") for m in _REF_EMAIL.finditer(text)]
    for m in _REF_CARD.finditer(text):
        if luhn_ok(re.sub(r"\D", "", m.group())):
            found.append((*m.span(), "card"))
    found += [(*m.span(), "national_id") for m in _REF_NATIONAL_ID.finditer(text)]
    found += [(*m.span(), "phone") for m in _REF_PHONE.finditer(text)]
    found.sort(key=lambda x: (x[0], -(x[1] - x[0])))
    chosen, end = [], -1
    for start, stop, kind in found:
        if start >= end:
            chosen.append((start, stop, kind))
            end = stop
    return chosen


_digits = st.text("0123456789", min_size=1, max_size=22)
_separator = st.sampled_from(["", " ", "-", ".", "  ", "\n", "-."])
_phoneish = st.builds(
    lambda code, parts: "+" + code + "".join(parts),
    st.text("0123456789", max_size=5),
    st.lists(
        st.one_of(
            st.tuples(_separator, _digits).map("".join),
            st.tuples(st.sampled_from(["", " ", "-"]), _digits).map(lambda p: f"{p[0]}({p[1]})"),
        ),
        max_size=7,
    ),
)
_emailish = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text("ab._%+-1é", min_size=1, max_size=40),
    st.text("ab.-1", min_size=1, max_size=34),
    st.text("abcZ1", min_size=1, max_size=8),
)
_fragment = st.one_of(
    _phoneish,
    _emailish,
    st.lists(_digits, min_size=1, max_size=6).map(" ".join),
    st.text("+1 2-.()a@b_é", max_size=12),
    st.sampled_from(
        ["AB 12 34 56 C", "123-45-6789", "(415) 555-2671", "415-555-2671", "4111 1111 1111 1111"]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_fragment, min_size=1, max_size=6).map("".join))
def test_linear_scanners_find_what_the_backtracking_patterns_found(text):
    assert _matches(text) == _reference_pii(text)


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from("+1 2-.()a@b_é"), max_size=60))
def test_linear_scanners_agree_on_arbitrary_text(text):
    assert _matches(text) == _reference_pii(text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text("abAB .-$_é1", min_size=1, max_size=4), min_size=1, max_size=5),
    st.text("abAB .-$_é1", max_size=30),
)
def test_blocklist_trie_blocks_what_the_flat_alternation_blocked(terms, text):
    flat = re.compile(
        r"(?<!\w)(" + "|".join(re.escape(t.strip()) for t in terms if t.strip()) + r")(?!\w)",
        re.IGNORECASE,
    )
    expected = flat.search(text) if any(t.strip() for t in terms) else None
    assert (blocked_term([text], terms) is None) == (expected is None)


def test_blocklist_pattern_is_compiled_once_per_list():
    blocklist_pattern.cache_clear()
    for _ in range(3):
        blocked_term(["nothing here"], ["project zeus", "athena"])
    assert blocklist_pattern.cache_info().misses == 1
