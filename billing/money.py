"""Micro-dollars to text. Amounts stay integer micro-dollars until shown; only display rounds,
to whole cents, half up."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MICRO = Decimal(1_000_000)


def micro_to_usd(micro: int) -> Decimal:
    """Exact dollars (six decimals)."""
    return Decimal(int(micro)) / MICRO


def usd_cents(micro: int) -> str:
    """``$1,234.57``: rounded half up to the cent, for display only."""
    value = micro_to_usd(micro).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def usd_per_mtok(micro_per_mtok: int) -> str:
    """A unit price, ``$0.15 / Mtok``; shows as many decimals as it needs (up to six)."""
    text = f"{micro_to_usd(micro_per_mtok):f}"
    text = text.rstrip("0") if "." in text else text  # "0" (a free model) stays "0"
    whole, _, frac = text.partition(".")
    return f"${int(whole):,}.{frac.ljust(2, '0')}"
