"""The fleet's lease decision: who holds a duty after a member asks for it."""

from __future__ import annotations

import pytest

from replicator.domain.fleet.leases import Lease, ask, give_up

NOW = 1_796_558_400.0
TERM = 6.0
LATER = NOW + TERM


class TestAsk:
    """A member gets the lease when it is free, expired or its own; never from a live holder."""

    @pytest.mark.parametrize(
        ("current", "asker", "expected"),
        [
            (None, "a", Lease("a", LATER)),
            (Lease("a", NOW + 1.0), "a", Lease("a", LATER)),
            (Lease("b", NOW + 1.0), "a", Lease("b", NOW + 1.0)),
            (Lease("b", NOW), "a", Lease("a", LATER)),
            (Lease("b", NOW - 3600.0), "a", Lease("a", LATER)),
            (Lease("a", NOW - 3600.0), "a", Lease("a", LATER)),
        ],
        ids=[
            "free-taken",
            "own-renewed",
            "another-live-kept",
            "expired-now-taken",
            "long-expired-taken",
            "own-expired-taken-again",
        ],
    )
    def test_ask(self, current: Lease | None, asker: str, expected: Lease) -> None:
        """The lease in force after `asker` asks at NOW for TERM."""
        assert ask(current, asker, NOW, TERM) == expected

    @pytest.mark.parametrize(
        ("current", "asker", "expected"),
        [
            (Lease("b", NOW + 5.0), "a", Lease("a", LATER)),
            (Lease("a", NOW + 1.0), "a", Lease("a", LATER)),
            (Lease("b", NOW - 1.0), "a", Lease("a", LATER)),
            (None, "a", Lease("a", LATER)),
        ],
        ids=["live-lease-of-a-dead-holder-taken", "own", "expired", "free"],
    )
    def test_ask_knowing_the_holder_gone(
        self, current: Lease | None, asker: str, expected: Lease
    ) -> None:
        """A holder known gone (a dead process of the asker's host) loses its lease at once,
        before it expires; the other cases are as without that knowledge."""
        assert ask(current, asker, NOW, TERM, holder_gone=True) == expected

    def test_held_by_until_expiry(self) -> None:
        """A lease is held by its holder until the moment it expires, by no one else."""
        lease = Lease("a", LATER)
        assert lease.held_by("a", NOW)
        assert not lease.held_by("b", NOW)
        assert not lease.held_by("a", LATER)


class TestGiveUp:
    """A stopping member drops only its own lease."""

    @pytest.mark.parametrize(
        ("current", "expected"),
        [(None, False), (Lease("a", LATER), True), (Lease("b", LATER), False)],
        ids=["none", "own", "another"],
    )
    def test_give_up(self, current: Lease | None, expected: bool) -> None:
        """Whether member a may delete the lease as it stops."""
        assert give_up(current, "a") is expected
