"""The watchdog's health decision: the journal answers, the workers progress or idle."""

from __future__ import annotations

import pytest

from replicator.domain.fleet.health import (
    MIN_DISPATCHER_SECONDS,
    STALLED_WORKERS_SECONDS,
    Facts,
    Limits,
    unhealthy,
)

# A watchdog pinged every 15 s (WatchdogSec=30s): the journal may be 30 s silent.
LIMITS = Limits.for_interval(15.0)
NOW = 10_000.0


def facts(
    *,
    journal: float | None = NOW - 1,
    dispatcher: float | None = NOW - 0.5,
    running: int = 0,
    progressed: float | None = None,
    started: float = 0.0,
) -> Facts:
    """Facts at NOW, healthy unless told otherwise."""
    return Facts(NOW, started, journal, dispatcher, running, progressed)


class TestUnhealthy:
    @pytest.mark.parametrize(
        ("case", "reason"),
        [
            (facts(), None),
            (facts(journal=NOW - 29), None),
            (facts(journal=NOW - 31), "journal not answering for 31 s"),
            (facts(journal=None, started=NOW - 5), None),
            (facts(journal=None, started=NOW - 40), "journal not answering for 40 s"),
            (facts(dispatcher=NOW - 31), "dispatcher stuck for 31 s"),
            (facts(dispatcher=NOW - 31, running=8, progressed=NOW - 60), None),
            (facts(running=2, progressed=NOW - STALLED_WORKERS_SECONDS + 1), None),
            (
                facts(running=2, progressed=NOW - STALLED_WORKERS_SECONDS - 1),
                f"2 jobs running, no progress for {STALLED_WORKERS_SECONDS + 1:.0f} s",
            ),
            (facts(running=1, progressed=None, started=NOW - 10), None),
            (
                facts(journal=NOW - 31, running=2, progressed=NOW - STALLED_WORKERS_SECONDS - 1),
                "journal not answering for 31 s",
            ),
        ],
        ids=[
            "all-well", "journal-just-in-time", "journal-silent", "journal-not-yet-at-start",
            "journal-never-answered", "dispatcher-stuck-idle", "dispatcher-parked-full",
            "workers-slow-but-moving", "workers-stalled", "first-job-just-started",
            "journal-named-first",
        ],
    )  # fmt: skip
    def test_decision(self, case: Facts, reason: str | None) -> None:
        """Each fact past its limit makes the daemon unhealthy with a reason naming it."""
        assert unhealthy(case, LIMITS) == reason


class TestLimits:
    @pytest.mark.parametrize(
        ("ping", "journal", "dispatcher"),
        [(15.0, 30.0, 30.0), (1.0, 2.0, MIN_DISPATCHER_SECONDS)],
        ids=["watchdog-30s", "watchdog-2s"],
    )
    def test_for_interval(self, ping: float, journal: float, dispatcher: float) -> None:
        """The journal may miss one probe; the dispatcher gets at least its floor."""
        limits = Limits.for_interval(ping)
        assert (limits.journal_seconds, limits.dispatcher_seconds) == (journal, dispatcher)
