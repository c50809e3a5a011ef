"""Budget periods: where the current day or month starts and ends (UTC). Shared by the budget
ledger, the spend figures and the alerts."""

from __future__ import annotations

import datetime as dt

from tenants.models import Budget


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    """The start of the ``period`` (a ``Budget.Period``) that holds ``now``."""
    now = now.astimezone(dt.UTC)
    if period == Budget.Period.DAILY:
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def period_end(period: str, now: dt.datetime) -> dt.datetime:
    """The end (exclusive) of the ``period`` that holds ``now``."""
    start = period_start(period, now)
    if period == Budget.Period.DAILY:
        return start + dt.timedelta(days=1)
    return start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
