"""Money in templates: integer micro-dollars shown as dollars, rounded to cents at display."""

from decimal import ROUND_HALF_UP, Decimal

from django import template

register = template.Library()


@register.filter
def usd(micro: int | None) -> str:
    if micro is None:
        return "—"
    dollars = (Decimal(int(micro)) / Decimal(1_000_000)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return f"${dollars:,}"
