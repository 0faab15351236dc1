"""RFC 3339 timestamps parsed purely into seconds since the epoch."""

from __future__ import annotations

import pytest

from replicator.domain.events.timestamps import parse_timestamp


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
        ],
    )
    def test_valid(self, text: str, expected: float) -> None:
        """RFC 3339 timestamps become seconds since the epoch, offsets applied."""
        assert parse_timestamp(text) == pytest.approx(expected)

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
        ],
    )
    def test_invalid(self, value: object) -> None:
        """Anything but an RFC 3339 timestamp of years 1 to 9999 UTC (datetime's range, what
        the journal stores) gives None."""
        assert parse_timestamp(value) is None
