"""PII detection and redaction, blocklists and JSON checks (plain functions)."""

import pytest

from serving.gateway.filters import (
    StreamRedactor,
    blocked_term,
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
