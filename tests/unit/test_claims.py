"""domain.fleet.claims: claimer ids, and which claimers are known alive or dead from here."""

from __future__ import annotations

import pytest

from replicator.domain.fleet.claims import Claimer, liveness, local_pids, parse_claimer

HERE = Claimer("db1", "pid:[4026531836]", 100, "5000")
LOCAL = Claimer("db1", "pid:[4026531836]", 200, "7000")
OTHER_HOST = Claimer("db2", "pid:[4026531836]", 200, "7000")
OTHER_NAMESPACE = Claimer("db1", "pid:[4026532999]", 200, "7000")


class TestParse:
    """Claimer ids round-trip; anything else is not a claimer."""

    def test_round_trip(self) -> None:
        """str() of a claimer parses back to it."""
        assert parse_claimer(str(LOCAL)) == LOCAL

    @pytest.mark.parametrize(
        "text",
        ["", "db1", "db1/ns/notapid/1", "db1/ns/1", "a/b/1/2/3"],
        ids=["empty", "host-only", "pid-not-a-number", "three-parts", "five-parts"],
    )
    def test_not_a_claimer(self, text: str) -> None:
        """Values of another shape name no claimer."""
        assert parse_claimer(text) is None


class TestLiveness:
    """Only claimers of this host and pid namespace can be judged, by their pid's start."""

    @pytest.mark.parametrize(
        ("claimer", "starts", "alive", "dead"),
        [
            (LOCAL, {200: "7000"}, True, False),
            (LOCAL, {200: None}, False, True),
            (LOCAL, {200: "9999"}, False, True),
            (LOCAL, {}, False, True),
            (OTHER_HOST, {200: None}, False, False),
            (OTHER_NAMESPACE, {200: None}, False, False),
        ],
        ids=[
            "running",
            "no-such-process",
            "pid-reused",
            "not-looked-up",
            "other-host-unknown",
            "other-namespace-unknown",
        ],
    )
    def test_verdict(
        self, claimer: Claimer, starts: dict[int, str | None], alive: bool, dead: bool
    ) -> None:
        """A local claimer runs when its pid runs a process started when it did."""
        found = liveness([str(claimer)], HERE, starts)
        assert (str(claimer) in found.alive, str(claimer) in found.dead) == (alive, dead)

    def test_unclaimed_and_foreign_values_are_ignored(self) -> None:
        """None (a job claimed before claims were recorded) and odd values are neither."""
        found = liveness([None, "garbage"], HERE, {})
        assert (found.alive, found.dead) == (frozenset(), frozenset())

    def test_only_local_pids_are_looked_up(self) -> None:
        """The pids to look up are those of local claimers only."""
        claimers = [str(LOCAL), str(OTHER_HOST), str(OTHER_NAMESPACE), None]
        assert local_pids(claimers, HERE) == {200}
