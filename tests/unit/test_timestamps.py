"""RFC 3339 timestamps parsed purely into seconds since the epoch, and written back."""

from __future__ import annotations

import pytest

from replicator.domain.events.timestamps import format_timestamp, parse_timestamp


class TestParseTimestamp:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("1970-01-01T00:00:00Z", 0.0, id="epoch"),
            pytest.param("2026-11-16T01:54:34Z", 1794794074.0, id="eventbridge"),
            pytest.param("2026-11-28T14:57:20.5Z", 1795877840.5, id="fraction"),
            pytest.param("2000-02-29T23:59:59+02:30", 951859799.0, id="leap-day-offset"),
            pytest.param("1969-12-31T00:00:00-01:00", -82800.0, id="before-epoch"),
            pytest.param("0001-01-01T00:00:00Z", -62135596800.0, id="first-datetime"),
            pytest.param("9999-12-31T23:59:59Z", 253402300799.0, id="last-datetime"),
            # distribution (Go's RFC3339Nano): nine digits, more than a datetime holds.
            pytest.param(
                "2026-11-28T14:57:20.123456789Z", 1795877840.123457, id="distribution-nanoseconds"
            ),
            pytest.param("2026-11-28T14:57:20.1234564Z", 1795877840.123456, id="seven-digits"),
            pytest.param("2026-11-28T14:57:20.999999999Z", 1795877841.0, id="rounds-up-a-second"),
            # Harbor, Quay and the forges send offsets; GAR and Artifactory milliseconds.
            pytest.param("2026-11-28T15:57:20+01:00", 1795877840.0, id="positive-offset"),
            pytest.param("2026-11-28T09:57:20.250-05:00", 1795877840.25, id="millis-offset"),
            pytest.param("2026-11-28T14:57:20-00:00", 1795877840.0, id="unknown-local-offset"),
            pytest.param("2026-11-28t14:57:20z", 1795877840.0, id="lower-case"),
            pytest.param("2026-11-28 14:57:20Z", 1795877840.0, id="space-separator"),
            pytest.param("2016-12-31T23:59:60Z", 1483228800.0, id="leap-second"),
        ],
    )
    def test_valid(self, text: str, expected: float) -> None:
        """RFC 3339 timestamps become seconds since the epoch, offsets applied, fractions to the
        microsecond."""
        assert parse_timestamp(text) == pytest.approx(expected, abs=1e-6)

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("2026-02-30T00:00:00Z", id="no-such-day"),
            pytest.param("2026-13-01T00:00:00Z", id="no-such-month"),
            pytest.param("2026-11-16T24:00:00Z", id="hour-24"),
            pytest.param("2026-11-16T01:54:34", id="no-zone"),
            pytest.param("yesterday", id="words"),
            pytest.param(1794794074, id="number"),
            pytest.param(None, id="absent"),
            pytest.param("0000-01-01T00:00:00Z", id="year-0"),
            pytest.param("0001-01-01T00:00:00+01:00", id="year-1-positive-offset"),
            pytest.param("9999-12-31T23:59:59-01:00", id="year-9999-negative-offset"),
            pytest.param("9999-12-31T23:59:59.9999999Z", id="rounds-into-year-10000"),
            # What datetime.fromisoformat takes and RFC 3339 does not.
            pytest.param("20261128T145720Z", id="basic-format"),
            pytest.param("2026-W48-6T14:57:20Z", id="week-date"),
            pytest.param("2026-11-28", id="date-only"),
            pytest.param("2026-11-28T14:57Z", id="no-seconds"),
            pytest.param("2026-11-28T14:57:20.1234567890Z", id="ten-digit-fraction"),
            pytest.param("2026-11-28T14:57:20+0100", id="offset-without-colon"),
            pytest.param("2026-11-28T14:57:61Z", id="second-61"),
            pytest.param("2026-11-28T14:57:20+24:00", id="offset-24-hours"),
        ],
    )
    def test_invalid(self, value: object) -> None:
        """Anything but an RFC 3339 timestamp of years 1 to 9999 UTC (datetime's range, what
        the journal stores) gives None."""
        assert parse_timestamp(value) is None


class TestFormatTimestamp:
    @pytest.mark.parametrize(
        ("seconds", "expected"),
        [
            pytest.param(0, "1970-01-01T00:00:00Z", id="epoch"),
            pytest.param(1795877840, "2026-11-28T14:57:20Z", id="now-ish"),
            pytest.param(951782399, "2000-02-28T23:59:59Z", id="before-leap-day"),
            pytest.param(253402300799, "9999-12-31T23:59:59Z", id="last"),
            pytest.param(-1, None, id="before-1970"),
            pytest.param(253402300800, None, id="year-10000"),
        ],
    )
    def test_format(self, seconds: int, expected: str | None) -> None:
        """Unix seconds are written as RFC 3339 UTC text of years 1970 to 9999, else None."""
        assert format_timestamp(seconds) == expected

    @pytest.mark.parametrize("seconds", [0, 68_169_600, 951_868_800, 1_795_877_840, 4_102_444_800])
    def test_round_trip(self, seconds: int) -> None:
        """What format_timestamp writes, parse_timestamp reads back to the same second."""
        assert parse_timestamp(format_timestamp(seconds)) == seconds
