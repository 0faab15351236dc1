"""The history checker's pure parts (tests/support/history.py): schedules, and the judgement of
a final state against the invariant (newest write wins, a delete stays deleted unless pushed
again) with each push's time to replication."""

from __future__ import annotations

import pytest

from tests.support.history import (
    WRITES,
    Arrival,
    Kind,
    Observed,
    Odds,
    Step,
    Write,
    judge,
    percentile,
    schedule,
    summary,
)

A, B = "a", "b"
ONE_WAY = {A: (B,)}
BOTH_WAYS = {A: (B,), B: (A,)}
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def tags(*seen: tuple[str, str, str | None]) -> dict[tuple[str, str, str], str | None]:
    """Observed tags of repository r: (side, tag, digest)."""
    return {(side, "r", tag): digest for side, tag, digest in seen}


def served(*seen: tuple[str, str]) -> dict[tuple[str, str, str], bool]:
    """Deleted manifests of repository r still served: (side, digest)."""
    return {(side, "r", digest): True for side, digest in seen}


PUSH_1 = Write(A, "r", "t", D1, at=10.0)
PUSH_2 = Write(A, "r", "t", D2, at=20.0)
DELETE_2 = Write(A, "r", "t", D2, deleted=True, at=30.0)
RESTORE_2 = Write(A, "r", "t", D2, at=40.0)
B_PUSH_3 = Write(B, "r", "u", D3, at=15.0)

CASES = [
    # (history, observed tags, deleted manifests served, routes, violations expected)
    ([PUSH_1, PUSH_2], tags((A, "t", D2), (B, "t", D2)), {}, ONE_WAY, 0),
    ([PUSH_1, PUSH_2], tags((A, "t", D2), (B, "t", D1)), {}, ONE_WAY, 1),
    ([PUSH_1, PUSH_2], tags((A, "t", D2)), {}, ONE_WAY, 1),
    ([PUSH_1, PUSH_2], tags((A, "t", D1), (B, "t", D1)), {}, ONE_WAY, 2),
    ([PUSH_1, PUSH_2, DELETE_2], tags(), {}, ONE_WAY, 0),
    ([PUSH_1, PUSH_2, DELETE_2], tags((B, "t", D2)), served((B, D2)), ONE_WAY, 2),
    ([PUSH_1, PUSH_2, DELETE_2], tags(), served((B, D2)), ONE_WAY, 1),
    ([PUSH_1, PUSH_2, DELETE_2], tags((A, "t", D1), (B, "t", D1)), {}, ONE_WAY, 2),
    ([PUSH_2, DELETE_2, RESTORE_2], tags((A, "t", D2), (B, "t", D2)), served((A, D2), (B, D2)),
     ONE_WAY, 0),
    ([PUSH_2, DELETE_2, RESTORE_2], tags((A, "t", D2)), served((A, D2)), ONE_WAY, 1),
    ([PUSH_1, B_PUSH_3], tags((A, "t", D1), (B, "t", D1), (A, "u", D3), (B, "u", D3)), {},
     BOTH_WAYS, 0),
    ([PUSH_1, B_PUSH_3], tags((A, "t", D1), (B, "t", D1), (B, "u", D3)), {}, BOTH_WAYS, 1),
    ([PUSH_1, B_PUSH_3], tags((A, "t", D1), (B, "t", D1), (B, "u", D3)), {}, ONE_WAY, 0),
    ([PUSH_1, PUSH_2, DELETE_2], tags(), served((A, D2), (B, D2)), BOTH_WAYS, 2),
    ([PUSH_1, PUSH_2, DELETE_2], tags(), served((A, D1), (B, D1)), BOTH_WAYS, 0),
]  # fmt: skip
CASE_IDS = [
    "re-push-converged", "re-push-undone-at-destination", "push-never-arrived",
    "push-undone-at-both", "delete-replicated", "delete-undone-by-tag-and-manifest",
    "deleted-manifest-served-untagged", "delete-rolled-back-to-older-push",
    "restore-after-delete-is-a-push", "restore-never-arrived", "active-active-converged",
    "active-active-b-push-never-reached-a", "one-way-b-tags-are-not-checked-at-a",
    "delete-resurrected-at-both", "older-untagged-image-may-stay",
]  # fmt: skip


class TestJudge:
    @pytest.mark.parametrize(("history", "seen", "manifests", "routes", "count"), CASES,
                             ids=CASE_IDS)  # fmt: skip
    def test_violations(
        self,
        history: list[Write],
        seen: dict[tuple[str, str, str], str | None],
        manifests: dict[tuple[str, str, str], bool],
        routes: dict[str, tuple[str, ...]],
        count: int,
    ) -> None:
        """Each registry a tag's owner replicates to, and the owner, must hold the tag's newest
        write (nothing after a delete), and a deleted manifest not pushed again is served
        nowhere: each difference is one violation."""
        verdict = judge(history, Observed(seen, manifests), routes)
        assert len(verdict.violations) == count, verdict.violations

    def test_a_violation_names_the_write_seen_and_the_one_wanted(self) -> None:
        """A tag left on an older push says which write it holds and which it should."""
        observed = Observed(tags((A, "t", D2), (B, "t", D1)), {})
        [line] = judge([PUSH_1, PUSH_2], observed, ONE_WAY).violations
        assert line.startswith(f"{B} r:t is {D1[:19]} (write #0, an older push)")
        assert f"not write #1 ({D2[:19]} at {A})" in line

    def test_time_to_replication_is_the_first_replica_after_the_push(self) -> None:
        """A push's time to replication is its first replica landed after it; a replica of
        the same digest landed before the push (an earlier write of it) does not count."""
        history = [PUSH_2, DELETE_2, RESTORE_2]
        landed = [
            Arrival(B, "r", "t", D2, 21.5),
            Arrival(B, "r", "t", D2, 43.0),
            Arrival(B, "r", "t", D2, 50.0),
        ]
        observed = Observed(tags((A, "t", D2), (B, "t", D2)), {})
        verdict = judge(history, observed, ONE_WAY, landed)
        assert verdict.latencies == [1.5, 3.0]
        assert verdict.overtaken == 0

    def test_a_push_overwritten_before_it_arrived_is_overtaken_not_late(self) -> None:
        """A push whose tag was written again before any replica of it landed counts as
        overtaken: the newer write is the one that must arrive."""
        observed = Observed(tags((A, "t", D2), (B, "t", D2)), {})
        verdict = judge([PUSH_1, PUSH_2], observed, ONE_WAY, [Arrival(B, "r", "t", D2, 22.0)])
        assert (verdict.latencies, verdict.overtaken) == ([2.0], 1)


def active_active(seed: int) -> list[Step]:
    """A 60-step schedule on 3 tags of an active-active pair."""
    return schedule(seed, length=60, repository="r", tags=3, owners=(A, B), routes=BOTH_WAYS)


class TestSchedule:
    def test_same_seed_same_schedule(self) -> None:
        """A seed names one schedule: a failure is replayed from its seed."""
        assert active_active(7) == active_active(7)
        assert active_active(7) != active_active(8)

    @pytest.mark.parametrize("seed", range(40))
    def test_steps_are_possible(self, seed: int) -> None:
        """Writes go to a tag's owner while it is up; deletes find a tag there, restores a
        deleted image; one registry is down at a time and every outage ends in the schedule."""
        steps = active_active(seed)
        down: set[str] = set()
        present: dict[str, bool] = {}
        owner: dict[str, str] = {}
        for step in steps:
            if step.kind is Kind.OUTAGE:
                assert not down
                down.add(step.side)
            elif step.kind is Kind.RETURN:
                down.remove(step.side)
            elif step.kind in WRITES:
                assert step.side not in down
                assert owner.setdefault(step.tag, step.side) == step.side
                if step.kind is Kind.DELETE:
                    assert present.get(step.tag)
                if step.kind is Kind.RESTORE:
                    assert present.get(step.tag) is False
                present[step.tag] = step.kind is not Kind.DELETE
        assert not down

    def test_every_kind_appears(self) -> None:
        """Over a few schedules with every fault asked for, every kind of step is drawn (none
        is dead weight); without broker restarts and wipes asked for, neither is."""
        faults = Odds(broker=1, wipe=1)
        drawn = {
            step.kind
            for seed in range(10)
            for step in schedule(
                seed, length=60, repository="r", tags=3, owners=(A,), routes=ONE_WAY, odds=faults
            )
        }
        assert drawn == set(Kind)
        default = {step.kind for seed in range(10) for step in active_active(seed)}
        assert default == set(Kind) - {Kind.BROKER, Kind.WIPE}

    def test_wipes_never_hit_a_tag_owner(self) -> None:
        """A wipe would lose an owner's writes for good: in A <-> B nothing is wiped, in
        A -> B only B."""
        faults = Odds(wipe=5)
        both = [
            step
            for seed in range(20)
            for step in schedule(
                seed,
                length=40,
                repository="r",
                tags=2,
                owners=(A, B),
                routes=BOTH_WAYS,
                odds=faults,
            )
        ]
        assert Kind.WIPE not in {step.kind for step in both}
        one_way = [
            step
            for seed in range(20)
            for step in schedule(
                seed, length=40, repository="r", tags=2, owners=(A,), routes=ONE_WAY, odds=faults
            )
        ]
        assert {step.side for step in one_way if step.kind is Kind.WIPE} == {B}

    def test_one_way_outages_hit_the_destination_only(self) -> None:
        """In A -> B, writes are at A and only B goes down."""
        steps = [
            step
            for seed in range(20)
            for step in schedule(
                seed,
                length=40,
                repository="r",
                tags=2,
                owners=(A,),
                routes=ONE_WAY,
                odds=Odds(outage=3),
            )
        ]
        assert {s.side for s in steps if s.kind is Kind.OUTAGE} == {B}
        assert {s.side for s in steps if s.kind in WRITES} == {A}


class TestSummary:
    def test_percentiles(self) -> None:
        """p50, p95 and max of times to replication, nearest rank; zeros for none."""
        values = [float(v) for v in range(1, 101)]
        assert summary(values) == {"p50": 50.5, "p95": 95.0, "max": 100.0}
        assert summary([]) == {"p50": 0.0, "p95": 0.0, "max": 0.0}
        assert percentile([3.0], 0.95) == 3.0
