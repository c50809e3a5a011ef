from django import template

from billing.money import usd_cents, usd_per_mtok

register = template.Library()


@register.filter
def usd(micro: int) -> str:
    """Micro-dollars shown as dollars and cents."""
    return usd_cents(micro or 0)


@register.filter
def per_mtok(micro_per_mtok: int) -> str:
    return usd_per_mtok(micro_per_mtok or 0)
