"""Where an event window starts and which buckets serve it: one rule for the store and scenarios.

A window is an `AggregateSpec.window_seconds`: a positive number of seconds,
or a negative number `-N` meaning N calendar months (`within 1 month`). A
month window starts at the same day of the month and time of day N months
before the decision's time, in UTC, the day clamped to the last day of a
shorter month: `within 1 month` at 2026-03-31 10:00 starts at 2026-02-28
10:00, at 2024-03-31 at 2024-02-29 (a leap year). UTC, not the customer's
zone, because the daily buckets a month window reads are UTC days; there is
no daylight-saving shift in UTC.

The same encoding and the same calendar serve every other window of the
language: caps (`cap 1 per 1mo`), contact policies, fatigue (`within` and
`for`), `contacts(… within 1mo)` (`window_start`), and time arithmetic
`now() - 1mo` (`add_months`, called by the generated code). What is kept in
Redis for such a window is sized by `keep_seconds`: 31 days a month, the
longest calendar month.

Windows up to 7 days read hourly buckets, longer ones (months included)
daily buckets; a window covers every bucket from the one holding its start
to the one holding `now`. The store (`engine.store.windows`) and the
scenario runner (`literal_inputs`) both ask this module, so they agree.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

HOUR = 3600
DAY = 86400
#: Windows up to this long are served from hourly buckets, longer ones from daily buckets.
HOURLY_MAX_WINDOW = 7 * DAY


def add_months(t: float, months: int) -> float:
    """The instant `months` calendar months after `t` (before it when negative).

    UTC, the same time of day, the day clamped to the last day of a shorter
    month: 2026-01-31 plus one month is 2026-02-28.
    """
    at = datetime.fromtimestamp(t, UTC)
    index = at.year * 12 + (at.month - 1) + months
    year, month = divmod(index, 12)
    day = min(at.day, calendar.monthrange(year, month + 1)[1])
    return at.replace(year=year, month=month + 1, day=day).timestamp()


def months_before(now: float, months: int) -> float:
    """The instant `months` calendar months before `now` (UTC; the day clamped to the month)."""
    return add_months(now, -months)


def keep_seconds(window: int) -> int:
    """How long a record must be kept to be seen by a window of `window` (seconds, or -months).

    A month is kept 31 days, the longest calendar month.
    """
    return -window * 31 * DAY if window < 0 else window


def window_start(window: int, now: float) -> float:
    """The oldest instant a window of `window` (seconds, or -months) reaches at `now`."""
    return months_before(now, -window) if window < 0 else now - window


def window_end(window: int, t: float) -> float:
    """The instant a window of `window` (seconds, or -months) starting at `t` ends."""
    return add_months(t, -window) if window < 0 else t + window


def bucket_size(window: int) -> int:
    """The bucket length, in seconds, that serves a window of `window` (seconds, or -months)."""
    return HOUR if 0 < window <= HOURLY_MAX_WINDOW else DAY


def bucket_range(window: int, now: float) -> tuple[int, int, int]:
    """(bucket size, first bucket, last bucket) a window covers at `now`, inclusive."""
    size = bucket_size(window)
    return size, int(window_start(window, now) // size), int(now // size)
