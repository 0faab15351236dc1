"""domain.destinations: the reachability table, what an outage is, which attempts count."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from replicator.domain.destinations import (
    FLAP_WINDOW_SECONDS,
    PROBE_MAX_SECONDS,
    PROBE_SECONDS,
    TRANSITIONS,
    Action,
    Reachability,
    Signal,
    asks_probe,
    counts_attempt,
    is_outage,
    probe_answered,
    probe_pace,
    transition,
    unreachable_since,
)

R = Reachability
S = Signal

TABLE = [
    (R.REACHABLE, S.ANSWERED, R.REACHABLE, Action.NONE),
    (R.REACHABLE, S.UNANSWERED, R.UNREACHABLE, Action.HOLD),
    (R.REACHABLE, S.PROBE_ANSWERED, R.REACHABLE, Action.NONE),
    (R.REACHABLE, S.PROBE_FAILED, R.REACHABLE, Action.NONE),
    (R.UNREACHABLE, S.UNANSWERED, R.UNREACHABLE, Action.NONE),
    (R.UNREACHABLE, S.PROBE_FAILED, R.UNREACHABLE, Action.NONE),
    (R.UNREACHABLE, S.PROBE_ANSWERED, R.REACHABLE, Action.RELEASE),
    (R.UNREACHABLE, S.ANSWERED, R.REACHABLE, Action.RELEASE),
]


class TestTransitions:
    """One table of (state, signal) -> (state, action), total over states and signals."""

    @pytest.mark.parametrize(
        ("state", "signal", "after", "action"),
        TABLE,
        ids=[f"{s.value}-{sig.value}" for s, sig, _, _ in TABLE],
    )
    def test_table(self, state: R, signal: S, after: R, action: Action) -> None:
        """Each signal moves the state as the table says, with the action it names."""
        change = transition(state, signal)
        assert (change.state, change.action) == (after, action)

    def test_table_is_total_and_exactly_this(self) -> None:
        """Every (state, signal) pair has an entry, and the table holds no other."""
        assert {(s, sig): (c.state, c.action) for (s, sig), c in TRANSITIONS.items()} == {
            (s, sig): (after, action) for s, sig, after, action in TABLE
        }
        assert len(TRANSITIONS) == len(R) * len(S)

    def test_one_warning_per_outage(self) -> None:
        """Of a run of signals through an outage, only the first failure holds and only the
        first answer releases: one change each way, whatever comes in between."""
        state, actions = R.REACHABLE, []
        for signal in (S.ANSWERED, S.UNANSWERED, S.UNANSWERED, S.PROBE_FAILED, S.UNANSWERED,
                       S.PROBE_ANSWERED, S.ANSWERED, S.PROBE_ANSWERED):  # fmt: skip
            change = transition(state, signal)
            state = change.state
            actions.append(change.action)
        assert [a for a in actions if a is not Action.NONE] == [Action.HOLD, Action.RELEASE]
        assert state is R.REACHABLE


class TestOutage:
    """Which failed attempts say the destination is not answering."""

    @pytest.mark.parametrize(
        ("status", "temporary", "at_destination", "outage"),
        [
            (None, True, True, True),
            (503, True, True, True),
            (502, True, True, True),
            (500, True, True, True),
            (504, True, True, True),
            (429, True, True, False),
            (408, True, True, False),
            (400, True, True, False),
            (404, False, True, False),
            (None, True, False, False),
            (503, True, False, False),
            (501, False, True, False),
        ],
        ids=[
            "no-answer", "503", "502", "500", "504", "throttled-429", "408", "blob-unknown-400",
            "not-found", "source-down", "source-503", "501-not-implemented",
        ],
    )  # fmt: skip
    def test_is_outage(
        self, status: int | None, temporary: bool, at_destination: bool, outage: bool
    ) -> None:
        """No answer or a 500/502/503/504 from the destination itself is an outage; a
        throttle, a client error or anything at the source is not."""
        assert is_outage(status=status, temporary=temporary, at_destination=at_destination) is (
            outage
        )

    @pytest.mark.parametrize(
        ("state", "outage", "counts"),
        [
            (R.REACHABLE, True, True),
            (R.REACHABLE, False, True),
            (R.UNREACHABLE, True, False),
            (R.UNREACHABLE, False, True),
        ],
        ids=["finds-the-outage", "ordinary-failure", "during-the-outage", "other-failure"],
    )
    def test_counts_attempt(self, state: R, outage: bool, counts: bool) -> None:
        """Only an outage failure at a destination already known unreachable is not counted."""
        assert counts_attempt(state, outage=outage) is counts

    @pytest.mark.parametrize(
        ("status", "state", "asks"),
        [(500, R.REACHABLE, True), (503, R.REACHABLE, True), (None, R.REACHABLE, False),
         (500, R.UNREACHABLE, False), (None, R.UNREACHABLE, False)],
        ids=["500-answered", "503-answered", "no-answer", "500-already-held", "none-held"],
    )  # fmt: skip
    def test_asks_probe(self, status: int | None, state: R, asks: bool) -> None:
        """A 5xx answer holds a reachable destination only if GET /v2/ fails too (a broken
        repository answers 500 for its own objects while the registry serves); no answer at
        all, or a destination held already, is not asked about."""
        assert asks_probe(status=status, state=state) is asks

    @pytest.mark.parametrize(
        ("status", "signal"),
        [(200, S.PROBE_ANSWERED), (401, S.PROBE_ANSWERED), (404, S.PROBE_ANSWERED),
         (None, S.PROBE_FAILED), (503, S.PROBE_FAILED), (500, S.PROBE_FAILED)],
        ids=["200", "401", "404", "no-answer", "503", "500"],
    )  # fmt: skip
    def test_probe_answered(self, status: int | None, signal: S) -> None:
        """Any answer below 500 to GET /v2/ is the registry serving its API again."""
        assert probe_answered(status) is signal

    def test_unreachable_since_says_when_in_utc(self) -> None:
        """The reason /readyz and status give names the destination and the moment, in UTC."""
        since = datetime(2026, 12, 6, 19, 30, 5, 123456, tzinfo=UTC)
        assert unreachable_since("usw2", since.isoformat(timespec="seconds")) == (
            "destination usw2 unreachable since 2026-12-06T19:30:05Z"
        )


class TestProbePace:
    """A destination whose returns do not hold is probed less and less often."""

    @pytest.mark.parametrize(
        ("previous", "since_return", "pace"),
        [
            (PROBE_SECONDS, None, PROBE_SECONDS),
            (8.0, FLAP_WINDOW_SECONDS + 1, PROBE_SECONDS),
            (PROBE_SECONDS, 2.0, 2 * PROBE_SECONDS),
            (4.0, 2.0, 8.0),
            (PROBE_MAX_SECONDS, 2.0, PROBE_MAX_SECONDS),
        ],
        ids=["first-outage", "return-held", "flap", "flap-again", "capped"],
    )
    def test_probe_pace(self, previous: float, since_return: float | None, pace: float) -> None:
        """Once a second for a fresh outage; doubled, up to PROBE_MAX_SECONDS, when lost again
        soon after its return."""
        assert probe_pace(previous, since_return=since_return) == pace
