"""Whether the daemon is healthy enough to ping systemd's watchdog, from facts gathered by I/O.

A WATCHDOG=1 ping says "I do my work", not "my event loop turns": the loop turning is implied
(the ping is sent from it), and on top of that the journal must answer, and the workers must
make progress or have nothing to do. The broker is not a condition: jobs already journalled
need none, so a broker down shows in a gauge and the status line, never in the watchdog.

Times are seconds on one monotonic clock; `None` means "never yet" (counted from the start).
"""

from __future__ import annotations

from dataclasses import dataclass

# The journal must have answered a probe within this many watchdog ping intervals: the probe
# runs once per interval, so two allow one probe that was slow (a neighbour's transaction).
JOURNAL_INTERVALS = 2
# The dispatcher passes at least once a second while it has room (engine.runner's idle poll);
# five seconds without a pass, and no job running, is a dispatcher stuck, not a slow one.
MIN_DISPATCHER_SECONDS = 5.0
# While jobs run, something must move at least this often: a job claimed or ended, or a
# registry exchange ended. Every network await of a copy has its own timeout, far below this;
# a single blob stream of several GiB is one exchange, hence the margin.
STALLED_WORKERS_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Limits:
    """How old each fact may be before the daemon is called unhealthy."""

    journal_seconds: float
    dispatcher_seconds: float
    stalled_seconds: float = STALLED_WORKERS_SECONDS

    @classmethod
    def for_interval(cls, ping_seconds: float) -> Limits:
        """The limits for a watchdog pinged every `ping_seconds`."""
        return cls(
            journal_seconds=JOURNAL_INTERVALS * ping_seconds,
            dispatcher_seconds=max(MIN_DISPATCHER_SECONDS, JOURNAL_INTERVALS * ping_seconds),
        )


@dataclass(frozen=True, slots=True)
class Facts:
    """What the daemon knows about itself at `now`."""

    now: float
    started: float
    journal_answered: float | None
    dispatcher_passed: float | None
    jobs_running: int
    progressed: float | None


def unhealthy(facts: Facts, limits: Limits) -> str | None:
    """Why the daemon should not ping the watchdog now, or None when it should."""
    journal_age = facts.now - (facts.journal_answered or facts.started)
    if journal_age > limits.journal_seconds:
        return f"journal not answering for {journal_age:.0f} s"
    if facts.jobs_running:
        still = facts.now - (facts.progressed or facts.started)
        if still > limits.stalled_seconds:
            return f"{facts.jobs_running} jobs running, no progress for {still:.0f} s"
        return None
    idle = facts.now - (facts.dispatcher_passed or facts.started)
    if idle > limits.dispatcher_seconds:
        return f"dispatcher stuck for {idle:.0f} s"
    return None
