"""The history checker's pure parts (tests/support/history.py): schedules and the invariant."""

from __future__ import annotations

import pytest

from tests.support.history import Kind, Write, expected, schedule, violations

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class TestSchedule:
    def test_same_seed_same_schedule(self) -> None:
        """A seed names one schedule: a failure is replayed from its seed."""
        first = schedule(7, length=30, repository="r", tags=3, owners=("a", "b"))
        assert first == schedule(7, length=30, repository="r", tags=3, owners=("a", "b"))
        assert first != schedule(8, length=30, repository="r", tags=3, owners=("a", "b"))

    def test_each_tag_is_written_at_its_owner_only(self) -> None:
        """Tags are shared out among the owners, and every write of a tag is made at its one."""
        steps = schedule(3, length=200, repository="r", tags=4, owners=("a", "b"))
        sides = {(s.tag, s.side) for s in steps if s.kind is not Kind.PAUSE}
        assert {tag for tag, _ in sides} == {"t0", "t1", "t2", "t3"}
        assert len(sides) == 4
        assert {side for _, side in sides} == {"a", "b"}
        assert {s.kind for s in steps} == {Kind.PUSH, Kind.DELETE, Kind.PAUSE}


HISTORY = [Write("a", "r", "t0", D1), Write("a", "r", "t1", D1), Write("a", "r", "t0", D2),
           Write("a", "r", "t1", None)]  # fmt: skip


class TestInvariant:
    def test_newest_write_wins(self) -> None:
        """A tag's expected state is its last write: a re-push's digest, or nothing after a
        delete."""
        assert expected(HISTORY) == {("r", "t0"): D2, ("r", "t1"): None}

    @pytest.mark.parametrize(
        ("observed", "count"),
        [
            ({("a", "r", "t0"): D2, ("b", "r", "t0"): D2}, 0),
            ({("a", "r", "t0"): D2, ("b", "r", "t0"): D1}, 1),
            ({("a", "r", "t0"): D2, ("b", "r", "t0"): D2, ("b", "r", "t1"): D1}, 1),
            ({}, 2),
        ],
        ids=["converged", "push-undone", "delete-undone", "nothing-there"],
    )
    def test_violations(self, observed: dict[tuple[str, str, str], str | None], count: int) -> None:
        """Every registry must hold each tag's newest write; each difference is one line."""
        assert len(violations(HISTORY, observed, ("a", "b"))) == count
