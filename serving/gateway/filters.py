"""Content filters: PII detection and redaction, blocklists, JSON validity.

Patterns are bounded in length (at most ``MAX_MATCH`` characters) so a streaming response can
be redacted exactly by holding back only that many characters (see ``StreamRedactor``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

MAX_MATCH = 80

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,32}@[A-Za-z0-9.-]{1,32}\.[A-Za-z]{2,6}\b")
# 13-19 digits, optionally grouped by spaces or dashes; checked with Luhn.
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
# US SSN (not 000/666/9xx area), UK NI number.
_NATIONAL_ID = re.compile(
    r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"
    r"|\b[A-CEGHJ-PR-TW-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b"
)
# International or North American phone numbers: +CC then 7-14 digits, or (NNN) NNN-NNNN.
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,4}\b"
    r"|(?<!\w)\(\d{3}\)\s?\d{3}[\s.-]\d{4}\b"
    r"|\b\d{3}[.-]\d{3}[.-]\d{4}\b"
)

REPLACEMENTS = {
    "email": "[EMAIL]",
    "card": "[CARD]",
    "national_id": "[NATIONAL_ID]",
    "phone": "[PHONE]",
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Every pattern above needs a digit or an "@": text with neither has no PII (most model
# output), and is not scanned further.
_MAYBE_PII = re.compile(r"[\d@]")


def _matches(text: str) -> list[tuple[int, int, str]]:
    if not _MAYBE_PII.search(text):
        return []
    found: list[tuple[int, int, str]] = []
    for m in _EMAIL.finditer(text):
        found.append((m.start(), m.end(), "email"))
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            found.append((m.start(), m.end(), "card"))
    for m in _NATIONAL_ID.finditer(text):
        found.append((m.start(), m.end(), "national_id"))
    for m in _PHONE.finditer(text):
        found.append((m.start(), m.end(), "phone"))
    # Keep the earliest, then longest, non-overlapping matches.
    found.sort(key=lambda x: (x[0], -(x[1] - x[0])))
    chosen: list[tuple[int, int, str]] = []
    end = -1
    for start, stop, kind in found:
        if start >= end:
            chosen.append((start, stop, kind))
            end = stop
    return chosen


def find_pii(text: str) -> list[str]:
    """Kinds of PII found in ``text`` (e.g. ["email", "card"])."""
    return [kind for _, _, kind in _matches(text)]


def redact(text: str) -> str:
    """``text`` with every e-mail, phone, card (Luhn-valid) and national ID replaced."""
    return _replace(text, _matches(text))


def _replace(text: str, matches: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, stop, kind in matches:
        out.append(text[pos:start])
        out.append(REPLACEMENTS[kind])
        pos = stop
    out.append(text[pos:])
    return "".join(out)


class StreamRedactor:
    """Redacts a stream of text deltas exactly: text is released only once no PII match can
    still grow into it (it lies more than ``MAX_MATCH`` characters behind the end)."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, delta: str) -> str:
        self._pending += delta
        cut = len(self._pending) - MAX_MATCH
        if cut <= 0:
            return ""
        matches = _matches(self._pending)
        for start, stop, _ in matches:
            if start < cut < stop or (start < cut and stop >= len(self._pending)):
                cut = start
                break
        released, self._pending = self._pending[:cut], self._pending[cut:]
        # Matches wholly inside the released text are final: redact with them, no rescan.
        return _replace(released, [m for m in matches if m[1] <= cut])

    def flush(self) -> str:
        released, self._pending = self._pending, ""
        return redact(released)


def blocked_term(texts: Iterable[str], blocklist: Iterable[str]) -> str | None:
    """The first blocklisted word or phrase found (case-insensitive, whole words), or None."""
    terms = [t.strip() for t in blocklist if t and t.strip()]
    if not terms:
        return None
    pattern = re.compile(
        r"(?<!\w)(" + "|".join(re.escape(t) for t in terms) + r")(?!\w)", re.IGNORECASE
    )
    for text in texts:
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


def is_valid_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
