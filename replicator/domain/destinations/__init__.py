"""Whether a destination answers: one table of (state, signal) -> next state, after h11.

    REACHABLE --UNANSWERED (a job's attempt: no answer, timeout, 5xx)--> UNREACHABLE
    UNREACHABLE --PROBE_ANSWERED or ANSWERED (a job got through)--> REACHABLE

A 5xx answer is taken for an outage only when GET /v2/ fails too (`asks_probe`): a broken
repository fails its own jobs, not the destination's. While a destination is UNREACHABLE its
jobs wait unclaimed, one probe at a time asks it whether it answers, and attempts failing for
its outage meanwhile are not counted against their jobs (`counts_attempt`). When it answers
again every waiting job is released at once, and jobs that ended FAILED for a temporary cause
are given a new chance (`RELEASE` says so).

A signal without an entry raises TransitionError: it is a bug in the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from replicator.errors import TransitionError


class Reachability(StrEnum):
    """What the daemon knows of a destination."""

    REACHABLE = "REACHABLE"
    UNREACHABLE = "UNREACHABLE"


class Signal(StrEnum):
    """What the daemon learns of a destination."""

    ANSWERED = "ANSWERED"  # a job's request got an answer that was not an outage
    UNANSWERED = "UNANSWERED"  # a job's attempt failed for an outage (see is_outage)
    PROBE_ANSWERED = "PROBE_ANSWERED"  # GET /v2/ got any answer below 500
    PROBE_FAILED = "PROBE_FAILED"  # GET /v2/ got none, or a 5xx


class Action(StrEnum):
    """What a transition asks of the daemon besides recording the new state."""

    NONE = "NONE"
    # Warn once, hold the destination's jobs (claim none) and start probing it.
    HOLD = "HOLD"
    # Warn once, release every waiting job now and retry those FAILED for a temporary cause.
    RELEASE = "RELEASE"


@dataclass(frozen=True, slots=True)
class Change:
    """The state after a signal and what the daemon does about it."""

    state: Reachability
    action: Action


R = Reachability
S = Signal

TRANSITIONS: Mapping[tuple[Reachability, Signal], Change] = MappingProxyType(
    {
        (R.REACHABLE, S.ANSWERED): Change(R.REACHABLE, Action.NONE),
        (R.REACHABLE, S.UNANSWERED): Change(R.UNREACHABLE, Action.HOLD),
        # A probe answered after a job already found it back: nothing more to release.
        (R.REACHABLE, S.PROBE_ANSWERED): Change(R.REACHABLE, Action.NONE),
        # A probe sent before a job found it back: the job's answer is newer, it stands.
        (R.REACHABLE, S.PROBE_FAILED): Change(R.REACHABLE, Action.NONE),
        (R.UNREACHABLE, S.UNANSWERED): Change(R.UNREACHABLE, Action.NONE),
        (R.UNREACHABLE, S.PROBE_FAILED): Change(R.UNREACHABLE, Action.NONE),
        (R.UNREACHABLE, S.PROBE_ANSWERED): Change(R.REACHABLE, Action.RELEASE),
        # A job in flight when it went away got through: it is back.
        (R.UNREACHABLE, S.ANSWERED): Change(R.REACHABLE, Action.RELEASE),
    }
)

# The probe's pace: once a second while an outage is fresh; a destination that fails again soon
# after each return (it answers GET /v2/ but not the jobs' requests) is probed half as often
# each time, up to once in 8 s, so the jobs it releases do not hammer it. Not a minute: a flaky
# destination (one failing a fifth of its requests) flaps for good, and holding its jobs up to
# a minute at a time left 187 of a 200-image burst waiting after 180 s
# (test_reliability_faults' flaky-destinations burst, in a full suite run).
PROBE_SECONDS = 1.0
PROBE_MAX_SECONDS = 8.0
# Lost again within this long of its return: the return did not hold (a flap).
FLAP_WINDOW_SECONDS = 30.0

# 5xx answers that mean "not serving now" rather than a bug of ours: the registry, or the load
# balancer or proxy in front of it, is down, overloaded or restarting.
_OUTAGE_STATUSES = frozenset({500, 502, 503, 504})


def transition(state: Reachability, signal: Signal) -> Change:
    """The state after `signal` and the action it asks for; TransitionError without an entry."""
    try:
        return TRANSITIONS[(state, signal)]
    except KeyError:
        raise TransitionError(
            f"destination in state {state.value} cannot take signal {signal.value}"
        ) from None


def is_outage(*, status: int | None, temporary: bool, at_destination: bool) -> bool:
    """Whether a failed attempt says the destination is not answering: no answer at all (refused,
    reset, timed out) or a 500/502/503/504 from the destination itself. A 429 is an answer
    (throttling), a 4xx is ours, and a failure at the source says nothing of the destination."""
    if not at_destination or not temporary:
        return False
    return status is None or status in _OUTAGE_STATUSES


def asks_probe(*, status: int | None, state: Reachability) -> bool:
    """Whether an outage seen by a job's attempt (`is_outage`) is checked by a probe (GET /v2/)
    before the destination is held: when the destination answered (a 5xx, `status`) and is
    held by nothing yet. A registry serving its API but answering 500 for one repository's
    object for good (a blob link file left empty by a registry killed mid-write) is a broken
    repository, not a destination down: taken for an outage, every job of the destination was
    held, released by the next probe and held again by the same blob. No answer at all is an
    outage without asking."""
    return status is not None and state is Reachability.REACHABLE


def counts_attempt(state: Reachability, *, outage: bool) -> bool:
    """Whether a failed attempt is counted against its job: not when it failed for an outage of
    a destination already known unreachable (it was in flight when the outage began, or raced
    the state); the attempt that finds the outage counts, as any failure."""
    return not (outage and state is Reachability.UNREACHABLE)


def probe_answered(status: int | None) -> Signal:
    """The signal of a probe (GET /v2/) that got `status` (None: no answer): any answer below
    500 is a registry serving its API (200, or 401 asking for credentials)."""
    if status is None or status >= 500:
        return Signal.PROBE_FAILED
    return Signal.PROBE_ANSWERED


def unreachable_since(destination: str, since: str) -> str:
    """How /readyz and `status` say it, `since` an ISO 8601 UTC time (datetime.isoformat with
    seconds): "destination usw2 unreachable since 2026-12-06T19:30:05Z"."""
    return f"destination {destination} unreachable since {since.removesuffix('+00:00')}Z"


def probe_pace(previous: float, *, since_return: float | None) -> float:
    """Seconds between probes of a destination that just became unreachable: PROBE_SECONDS,
    or twice the `previous` pace (capped) when it returned only `since_return` seconds ago
    (None: never lost before) and that return did not hold."""
    if since_return is not None and since_return < FLAP_WINDOW_SECONDS:
        return min(PROBE_MAX_SECONDS, max(previous, PROBE_SECONDS) * 2)
    return PROBE_SECONDS
