"""The console's money filters (billing/templatetags/billing_money.py): integer micro-dollars
shown as dollars, rounded half up to the cent, on the billing and the console pages alike."""

import pytest
from django.template import Context, Template


def _render(text: str, **context) -> str:
    return Template("{% load billing_money %}" + text).render(Context(context))


@pytest.mark.parametrize(
    "micro, shown",
    [
        (0, "$0.00"),
        (4_999, "$0.00"),
        (5_000, "$0.01"),
        (1_000_000, "$1.00"),
        (1_234_565_000, "$1,234.57"),
        (12_345_678_901_234, "$12,345,678.90"),
        (-2_500_000, "-$2.50"),
        (None, "$0.00"),
    ],
)
def test_usd_rounds_half_up_to_the_cent(micro, shown):
    assert _render("{{ v|usd }}", v=micro) == shown


@pytest.mark.parametrize(
    "micro, shown",
    [(0, "$0.00"), (150_000, "$0.15"), (1_234_567, "$1.234567"), (10**9, "$1,000.00")],
)
def test_per_mtok_shows_the_decimals_it_needs(micro, shown):
    assert _render("{{ v|per_mtok }}", v=micro) == shown
