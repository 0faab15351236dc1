"""RFC 3339 timestamps <-> seconds since the epoch: the standard library's calendar, no clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# RFC 3339's grammar (which datetime.fromisoformat is wider than: it takes no zone, week dates,
# `20261128T1457Z`), as distribution (Go, nanoseconds), EventBridge (seconds) and the hosted
# registries write it. The fraction is kept apart: up to 9 digits arrive (Go's RFC3339Nano),
# more than a datetime holds.
_TIMESTAMP_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ]((?:[01]\d|2[0-3]):[0-5]\d):([0-5]\d|60)(?:\.(\d{1,9}))?"
    r"([Zz]|[+-]\d{2}:\d{2})$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 allows a leap second (`23:59:60`); datetime does not: it is read as the next minute's
# first second, the moment POSIX time gives it.
_LEAP_SECOND = "60"
_MICROSECONDS = 1_000_000


def parse_timestamp(value: object) -> float | None:
    """RFC 3339 text -> seconds since the epoch (UTC); None when absent, not RFC 3339, or a
    moment outside years 1 to 9999 in UTC (what a datetime holds: "0000-01-01T00:00:00Z" and
    "9999-12-31T23:59:59-01:00" parse, but name no moment the journal can store).

    The fraction is rounded to the microsecond, a datetime's resolution.
    A bad timestamp does not reject the event: it only feeds the latency metric.
    """
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP_RE.match(value)
    if not match:
        return None
    day, hour_minute, second, fraction, zone = match.groups()
    leap = second == _LEAP_SECOND
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        moment = datetime.fromisoformat(
            f"{day}T{hour_minute}:{'59' if leap else second}{zone}"
        ).astimezone(UTC)
        microseconds = round(float(f"0.{fraction or 0}") * _MICROSECONDS)
        moment += timedelta(seconds=1 if leap else 0, microseconds=microseconds)
    except (ValueError, OverflowError):  # no such day or hour; beyond years 1-9999 in UTC
        return None
    return (moment - _EPOCH) / timedelta(seconds=1)


# Unix seconds beyond year 9999 have no four-digit RFC 3339 form.
_MAX_UNIX_SECONDS = 253_402_300_799


def format_timestamp(seconds: int) -> str | None:
    """Unix seconds -> RFC 3339 UTC text (`2026-11-28T10:15:30Z`); None outside years 1970-9999."""
    if not 0 <= seconds <= _MAX_UNIX_SECONDS:
        return None
    return f"{_EPOCH + timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%S}Z"
