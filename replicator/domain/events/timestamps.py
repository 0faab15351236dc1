"""RFC 3339 timestamps -> seconds since the epoch, computed without a clock or datetime."""

from __future__ import annotations

import re

# RFC 3339 as distribution (Go, nanoseconds) and EventBridge (seconds) write it.
_TIMESTAMP_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_SECONDS_PER_DAY = 86_400


def parse_timestamp(value: object) -> float | None:
    """RFC 3339 text -> seconds since the epoch (UTC); None when absent, not RFC 3339, or a
    moment outside years 1 to 9999 in UTC (what a datetime holds: "0000-01-01T00:00:00Z" and
    "9999-12-31T23:59:59-01:00" parse, but name no moment the journal can store).

    A bad timestamp does not reject the event: it only feeds the latency metric.
    """
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP_RE.match(value)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        return None
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second, as RFC 3339 allows
        return None
    fraction = float(f"0.{match.group(7)}") if match.group(7) else 0.0
    offset = 0
    if match.group(9):
        sign = -1 if match.group(9) == "-" else 1
        offset = sign * (int(match.group(10)) * 3600 + int(match.group(11)) * 60)
    days = _days_from_civil(year, month, day)
    moment = days * _SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset + fraction
    if not _EARLIEST <= moment <= _LATEST:
        return None
    return moment


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


# The first and the last whole second of years 1 to 9999, UTC: datetime's range (a fraction
# past the last second could round up out of it when converted to microseconds).
_EARLIEST = _days_from_civil(1, 1, 1) * _SECONDS_PER_DAY
_LATEST = _days_from_civil(10000, 1, 1) * _SECONDS_PER_DAY - 1


# Unix seconds beyond year 9999 have no four-digit RFC 3339 form.
_MAX_UNIX_SECONDS = 253_402_300_799


def format_timestamp(seconds: int) -> str | None:
    """Unix seconds -> RFC 3339 UTC text (`2026-11-28T10:15:30Z`); None outside years 1970-9999."""
    if not 0 <= seconds <= _MAX_UNIX_SECONDS:
        return None
    days, rest = divmod(seconds, _SECONDS_PER_DAY)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """The proleptic Gregorian date `days` after 1970-01-01 (H. Hinnant's algorithm)."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day
