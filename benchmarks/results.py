"""benchmarks/RESULTS.md: each benchmark owns one ``## <title>`` section and rewrites it."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(title: str, text: str) -> None:
    """Replace the section headed ``## {title}`` (or append it); ``text`` starts with that
    heading."""
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    start = existing.find(f"## {title}\n")
    if start >= 0:
        end = existing.find("\n## ", start + 1)
        existing = existing[:start] + existing[end + 1 if end >= 0 else len(existing) :]
    RESULTS.write_text(existing.rstrip() + "\n\n" + text.rstrip() + "\n")
