"""Content filters: PII detection and redaction, blocklists, JSON validity.

Patterns are bounded in length (at most ``MAX_MATCH`` characters) so a streaming response can
be redacted exactly by holding back only that many characters (see ``StreamRedactor``).

Every scan is linear in the length of the text: prompts are tenant input, and a pattern that
backtracks lets one tenant spend the gateway's CPU (a megabyte of ``+`` and digits cost 2.3 s
with the first phone pattern). No pattern here has a quantifier whose choices overlap with
what follows it: digit runs are taken whole (possessive ``++``, atomic ``(?>…)``), each run's
length says how many groups it needs, and e-mail addresses are found from their ``@``.
``tests/serving/gateway/test_filters.py`` checks that the results equal those of the first (slow)
patterns on generated text; ``tests/adversarial/test_filters.py`` times the worst inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

import orjson

MAX_MATCH = 80

# --- scanning ----------------------------------------------------------------------------
# ``pattern.finditer`` restarts the regex engine at every character where no match starts,
# and each restart costs more than reading a character (a megabyte of digits: ~50 ms a
# pattern). Each pattern here can only start at the first character of some unit (a run of
# digits, a "+"...), so its scanner reads on, in one call of the engine, over the gaps
# between units (a tight loop over a character class) and the units where it does not
# start, and stops at the next match or at the end.


def _scanner(hit: str, unit: str, gap: str, skip: str = "(?!)") -> re.Pattern[str]:
    """Matched at a position: skips gaps (``gap`` is a character class) and units where
    ``hit`` does not start, then matches ``hit`` (group 1) or the end of the text. ``hit``
    must only ever start where a unit starts. ``skip`` matches units where ``hit`` surely
    does not start, which are passed without trying it."""
    return re.compile(rf"{gap}*+(?:(?:{skip}|(?!{hit}){unit}){gap}*+)*+(?:({hit})|\Z)")


def _scan(scanner: re.Pattern[str], text: str, pos: int = 0) -> Iterator[re.Match[str]]:
    """What ``finditer`` of the scanner's pattern yields from ``pos``: leftmost matches that
    do not overlap (group 1)."""
    while True:
        m = scanner.match(text, pos)
        if m is None or m.start(1) < 0:
            return
        yield m
        pos = m.end(1)


# --- e-mail -------------------------------------------------------------------------------
# An address is up to 32 local characters, "@", a domain and a 2-6 letter TLD, starting at a
# word boundary. Trying it from every boundary re-reads up to 32 characters each time, so it
# is found from the whole run of local characters before an "@" instead (each run read
# once), and its start is then the first boundary among the run's last 32 characters.
_LOCAL = "A-Za-z0-9._%+-"
_AT_DOMAIN = r"@[A-Za-z0-9.-]{1,32}\.[A-Za-z]{2,6}\b"
# A run of local characters is read once, and checked for an address after it; the scanner
# stops before the first run that has one (group 1: the run, "@" and the domain).
_EMAIL_RUN = re.compile(
    rf"[^{_LOCAL}]*+(?:[{_LOCAL}]++(?!{_AT_DOMAIN})[^{_LOCAL}]*+)*+"
    rf"(?:([{_LOCAL}]++{_AT_DOMAIN})|\Z)"
)
_BOUNDARY = re.compile(r"\b")
MAX_LOCAL = 32

# --- cards, national IDs ------------------------------------------------------------------
# 13-19 digits, optionally grouped by spaces or dashes; checked with Luhn. Each start reads at
# most 19 digits (the separators cannot be digits, so nothing backtracks but the count).
# Skipped untried: a short run that no separated digit follows, a run too long to end on a
# boundary within 19 digits.
_CARD = _scanner(r"\b\d(?:[ -]?\d){12,18}\b", r"\d++", r"\D", skip=r"\d{1,12}+(?![ -]?\d)|\d{20,}+")
# US SSN (not 000/666/9xx area), UK NI number. Tried only at a run of three digits and a dash,
# at two letters and digits.
_SSN = _scanner(
    r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b",
    r"\d++",
    r"\D",
    skip=r"\d{4,}+|\d{1,2}+(?!\d)|\d{3}(?!-)",
)
_NI = _scanner(
    r"\b[A-CEGHJ-PR-TW-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b",
    r"[A-CEGHJ-PR-TW-Z]++",
    r"[^A-CEGHJ-PR-TW-Z]",
    skip=r"[A-CEGHJ-PR-TW-Z]{3,}+|[A-CEGHJ-PR-TW-Z](?![A-CEGHJ-PR-TW-Z])"
    r"|[A-CEGHJ-PR-TW-Z]{2}(?!\s?\d)",
)

# --- phone numbers ------------------------------------------------------------------------
# International: "+", a 1-3 digit country code, an optional "(area)", then 2 to 5 groups of
# 2-4 digits with optional single separators, ending at a word boundary. Written with
# overlapping quantifiers (\d{2,4}(?:[\s.-]?\d{2,4}){1,4}) this tries every way of cutting a
# digit run into groups. Here each run of digits is taken whole: a run of n digits needs
# ceil(n/4) groups (cost), runs follow one another while the budget of 5 groups allows, and
# the match ends at the last run whose end is a boundary: the same matches, one way to each.
_SEP = r"[\s.-]"


def _run(cost: int) -> str:
    """A whole run of digits that needs exactly ``cost`` groups of 2-4 digits."""
    lo, hi = (2, 4) if cost == 1 else (4 * cost - 3, 4 * cost)
    return rf"\d{{{lo},{hi}}}+(?!\d)"


def _runs(budget: int) -> str:
    """Runs separated by one separator, at most ``budget`` groups in all, as far as they go
    and end on a word boundary."""
    alternatives = []
    for cost in range(1, budget + 1):
        more = rf"(?>{_SEP}{_runs(budget - cost)}|\b)" if cost < budget else r"\b"
        alternatives.append(_run(cost) + more)
    return "(?>" + "|".join(alternatives) + ")"


def _groups() -> str:
    """2 to 5 groups: a first run of 2-3 digits is one group, so another run must follow."""
    return (
        rf"(?>\d{{2,3}}+(?!\d){_SEP}{_runs(4)}"
        rf"|\d{{4}}(?!\d)(?>{_SEP}{_runs(4)}|\b)"
        + "".join(
            f"|{_run(cost)}" + (rf"(?>{_SEP}{_runs(5 - cost)}|\b)" if cost < 5 else r"\b")
            for cost in range(2, 6)
        )
        + ")"
    )


_GROUPS = _groups()
_INTERNATIONAL = (
    r"(?<![\w+])\+(?:"
    # the country code is the whole first run; then a separator, an area code, a separator
    rf"\d{{1,3}}+(?!\d){_SEP}?(?:\(\d{{1,4}}+\){_SEP}?)?{_GROUPS}"
    # or the first run holds the country code and the first group(s), longest code first
    rf"|\d{{3}}(?=\d\d){_GROUPS}|\d\d(?=\d\d){_GROUPS}|\d(?=\d\d){_GROUPS})"
)
# International or North American phone numbers: +CC then 4-20 digits, or (NNN) NNN-NNNN.
_PHONE = _scanner(
    _INTERNATIONAL + r"|(?<!\w)\(\d{3}\)\s?\d{3}[\s.-]\d{4}\b" + r"|\b\d{3}[.-]\d{3}[.-]\d{4}\b",
    r"(?:\d++|[+(])",
    r"[^\d+(]",
    skip=r"\d{4,}+|\d{1,2}+(?!\d)|\d{3}(?![.-])",  # digit runs that cannot start NNN-NNN-NNNN
)

REPLACEMENTS = {
    "email": "[EMAIL]",
    "card": "[CARD]",
    "national_id": "[NATIONAL_ID]",
    "phone": "[PHONE]",
}

_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


_LUHN_DOUBLED_ASCII = str.maketrans("0123456789", "0246813579")


def luhn_ok(digits: str) -> bool:
    if digits.isascii():  # byte sums: a card every 38 characters is 27,000 checks a megabyte
        kept, doubled = digits[-1::-2], digits[-2::-2].translate(_LUHN_DOUBLED_ASCII)
        total = sum(kept.encode()) + sum(doubled.encode()) - 48 * len(digits)
    else:  # other scripts' digits (\d matches them too)
        total = sum(map(int, digits[-1::-2])) + sum(_LUHN_DOUBLED[int(d)] for d in digits[-2::-2])
    return total % 10 == 0


# Every pattern above needs a digit or an "@": text with neither has no PII (most model
# output), and is not scanned further.
_DIGIT = re.compile(r"\d")


def _maybe_pii(text: str) -> bool:
    if "@" in text:
        return True
    if text.isascii():  # ten substring searches are much faster than a regex over the text
        return any(d in text for d in "0123456789")
    return _DIGIT.search(text) is not None


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"  # what \w matches in a str pattern


def _emails(text: str) -> list[tuple[int, int]]:
    """Spans of e-mail addresses: the matches of
    ``\\b[A-Za-z0-9._%+-]{1,32}@[A-Za-z0-9.-]{1,32}\\.[A-Za-z]{2,6}\\b`` (leftmost, not
    overlapping), each run of local characters read once."""
    found: list[tuple[int, int]] = []
    pos = 0
    while m := _EMAIL_RUN.match(text, pos):
        run_start, end = m.span(1)
        if run_start < 0:
            break
        at = text.index("@", run_start)
        lo = max(run_start, at - MAX_LOCAL)
        if (lo > 0 and _is_word(text[lo - 1])) != _is_word(text[lo]):
            start = lo
        else:
            b = _BOUNDARY.search(text, lo + 1, at)
            start = b.start() if b is not None and b.start() < at else -1
        if start < 0:
            pos = at  # no start before this "@" works; read on from it
            continue
        found.append((start, end))
        pos = end
    return found


def _earliest_longest(match: tuple[int, int, str]) -> tuple[int, int]:
    return match[0], match[0] - match[1]


def _matches(text: str) -> list[tuple[int, int, str]]:
    if not _maybe_pii(text):
        return []
    found: list[tuple[int, int, str]] = []
    if "@" in text:
        found.extend((start, stop, "email") for start, stop in _emails(text))
    for m in _scan(_CARD, text):
        if luhn_ok(m.group(1).replace(" ", "").replace("-", "")):
            found.append((*m.span(1), "card"))
    found.extend((*m.span(1), "national_id") for m in _scan(_SSN, text))
    found.extend((*m.span(1), "national_id") for m in _scan(_NI, text))
    found.extend((*m.span(1), "phone") for m in _scan(_PHONE, text))
    # Keep the earliest, then longest, non-overlapping matches.
    found.sort(key=_earliest_longest)
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


def redact_json(text: str) -> str:
    """PII redaction of a JSON text (a tool call's arguments) that keeps it JSON: every string
    in it redacted, and a number that is PII (a card number written as a number) replaced by
    the string of its redaction. Text that is not JSON is redacted as text."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return redact(text)
    redacted = _redact_value(value)
    return text if redacted == value else orjson.dumps(redacted).decode()


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        digits = str(value)
        return value if redact(digits) == digits else redact(digits)
    return value


def redact_tool_calls(message: Any) -> None:
    """Redact, in place, the arguments of a message's ``tool_calls`` (:func:`redact_json`)."""
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    for call in calls if isinstance(calls, list) else ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            fn["arguments"] = redact_json(fn["arguments"])


class ToolCallRedactor:
    """Redacts the arguments of one streamed choice's tool calls, call by call, as they
    stream (a :class:`StreamRedactor` each): ``feed`` rewrites a delta in place, ``flush``
    returns what is still held as tool-call deltas for the last chunk."""

    def __init__(self) -> None:
        self._calls: dict[int, StreamRedactor] = {}

    def feed(self, delta: Any) -> None:
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                red = self._calls.setdefault(call.get("index", 0), StreamRedactor())
                fn["arguments"] = red.feed(fn["arguments"])

    def flush(self) -> list[dict[str, Any]]:
        out = []
        for index, red in self._calls.items():
            rest = red.flush()
            if rest:
                out.append({"index": index, "function": {"arguments": rest}})
        return out


# --- blocklists ---------------------------------------------------------------------------


def _fold(ch: str) -> str:
    low = ch.lower()
    return low if len(low) == 1 else ch


def _trie_pattern(node: dict[str, dict]) -> str:
    """A regex for the terms of a trie: at each character only one branch can go on."""
    branches = [re.escape(ch) + _trie_pattern(child) for ch, child in sorted(node.items()) if ch]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    # A term that ends here stands on its own before any longer term that starts with it.
    return f"(?:{body})??" if "" in node else body


@lru_cache(maxsize=512)
def blocklist_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """One compiled pattern for a blocklist (cached per list): any of its words or phrases,
    whole, case-insensitive (group 1); None for an empty list. The terms share a trie, so a
    position costs at most the length of the longest term, not the number of terms (a flat
    alternation of 1,000 terms took 2 s over a megabyte; this, 0.15 s)."""
    trie: dict[str, dict] = {}
    for term in terms:
        term = term.strip() if term else ""
        if not term:
            continue
        node = trie
        for ch in term:
            node = node.setdefault(_fold(ch), {})
        node[""] = {}
    if not trie:
        return None
    return re.compile(r"(?<!\w)(" + _trie_pattern(trie) + r")(?!\w)", re.IGNORECASE)


def blocked_term(texts: Iterable[str], blocklist: Iterable[str]) -> str | None:
    """The first blocklisted word or phrase found (case-insensitive, whole words), or None."""
    pattern = blocklist_pattern(tuple(blocklist))
    if pattern is None:
        return None
    for text in texts:
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


def is_valid_json(text: str) -> bool:
    """Whether a model's output is JSON (strict: no NaN or Infinity). orjson gives up past
    1,024 levels with an error where ``json.loads`` recursed into a RecursionError: a model
    can be asked for a hundred thousand brackets."""
    try:
        orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError):
        return False
    return True
