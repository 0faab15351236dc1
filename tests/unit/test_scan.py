"""Backfill and verify decisions: destinations, tag plans, the journal's COMPLETE, run verdicts,
drift categories."""

from __future__ import annotations

import pytest

from replicator.domain.jobs import JobKey, JobKind, JobState
from replicator.domain.jobs.freshness import lost_delete_origin
from replicator.domain.routing import Site
from replicator.domain.routing.policy import parse_policy
from replicator.domain.routing.rules import parse_replication_config
from replicator.domain.routing.scan import (
    Drift,
    RunOutcome,
    TagAction,
    TagPlan,
    TagRecord,
    after_journal,
    asks_known,
    deletes_reach,
    extra_tags,
    hold_newer,
    plan_tag,
    replay_delete,
    run_outcome,
    tag_drift,
    targets,
)

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64

RULES = parse_replication_config(
    {
        "rules": [
            {
                "destinations": [
                    {"region": "us-west-2", "registryId": "111122223333"},
                    {"region": "eu-west-1", "registryId": "444455556666"},
                ],
                "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}],
                "deleteReplication": {"enabled": True},
            },
            {
                "destinations": [{"region": "us-west-2", "registryId": "111122223333"}],
                "repositoryFilters": [{"filter": "dev", "filterType": "PREFIX_MATCH"}],
                "tagFilters": [{"filter": "^v", "filterType": "REGEX"}],
            },
        ]
    }
)
POLICY = parse_policy(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": ["ecr:ReplicateImage"],
                "Resource": "arn:aws:ecr:eu-west-1:444455556666:repository/prod/*",
            }
        ],
    }
)
SOURCE = Site("use1", "111122223333", "us-east-1", RULES, None)
SAME_ACCOUNT = Site("usw2", "111122223333", "us-west-2", parse_replication_config({}), None)
CROSS_ACCOUNT = Site("euw1", "444455556666", "eu-west-1", parse_replication_config({}), POLICY)
SITES = {site.name: site for site in (SOURCE, SAME_ACCOUNT, CROSS_ACCOUNT)}


class TestTargets:
    @pytest.mark.parametrize(
        ("repository", "tag", "only", "expected"),
        [
            ("prod/app", "latest", None, ("usw2", "euw1")),
            ("prod/app", "latest", "euw1", ("euw1",)),
            ("prod/app", "latest", "nowhere", ()),
            ("dev/app", "v1", None, ("usw2",)),
            ("dev/app", "latest", None, ()),
            ("other/app", "v1", None, ()),
        ],
        ids=["two-dests", "only-one", "only-unknown", "tag-filter-hit", "tag-filter-miss", "none"],
    )
    def test_targets_follow_rules_and_only(
        self, repository: str, tag: str, only: str | None, expected: tuple[str, ...]
    ) -> None:
        """Destinations are the rules' matches, in order, narrowed to `only` when given."""
        found = targets(SOURCE, SITES, repository=repository, tag=tag, only=only)
        assert tuple(site.name for site in found) == expected

    @pytest.mark.parametrize(
        ("repository", "target", "expected"),
        [
            ("prod/app", CROSS_ACCOUNT, True),
            ("prod/app", SAME_ACCOUNT, True),
            ("dev/app", SAME_ACCOUNT, False),
        ],
        ids=["prod-cross", "prod-same", "dev-rule-off"],
    )
    def test_deletes_reach_only_rules_with_delete_replication(
        self, repository: str, target: Site, expected: bool
    ) -> None:
        """A delete reaches a destination only through a rule with deleteReplication on."""
        assert deletes_reach(SOURCE, target, repository=repository, tag="v1") is expected


class TestAsksKnown:
    @pytest.mark.parametrize(
        ("target", "expected"),
        [(SAME_ACCOUNT, False), (CROSS_ACCOUNT, False), (SOURCE, True)],
        ids=["one-way-destination", "one-way-cross-account", "destination-replicates-too"],
    )
    def test_asks_only_where_the_destination_replicates(self, target: Site, expected: bool) -> None:
        """A scan asks whether a destination knows a repository (tags or none) only when the
        destination replicates too: it may be the origin of the tag, and knowing the repository
        without it means it deleted it; one-way, never."""
        assert asks_known(target) is expected

    def test_a_known_repository_without_tags_is_held_to(self) -> None:
        """A destination that knows the repository but lists no tag of it (its last tag was
        deleted) is planned as holding it; one that does not know it (wiped) is not."""
        known, lost = (
            plan_tag(
                SOURCE, SAME_ACCOUNT, repository="prod/app", tag="v1", source_digest=OLD,
                dest_digest=None, repository_exists=False, repository_known=knows,
            )
            for knows in (True, False)
        )  # fmt: skip
        assert (known.dest_repository, lost.dest_repository) == (True, False)
        assert known.action is lost.action is TagAction.COPY


class TestPlanTag:
    @pytest.mark.parametrize(
        ("target", "repository", "dest_digest", "exists", "action", "reason_part"),
        [
            (SAME_ACCOUNT, "prod/app", OLD, True, TagAction.UP_TO_DATE, "same digest"),
            (SAME_ACCOUNT, "prod/app", None, False, TagAction.COPY, "missing"),
            (SAME_ACCOUNT, "prod/app", NEW, True, TagAction.COPY, NEW),
            (CROSS_ACCOUNT, "prod/app", None, True, TagAction.COPY, "missing"),
            (CROSS_ACCOUNT, "prod/app", None, False, TagAction.DENIED, "ecr:CreateRepository"),
            (CROSS_ACCOUNT, "dev/app", None, True, TagAction.DENIED, "ecr:ReplicateImage"),
            (CROSS_ACCOUNT, "dev/app", OLD, True, TagAction.UP_TO_DATE, "same digest"),
        ],
        ids=[
            "up-to-date",
            "missing-same-account",
            "different-digest",
            "cross-account-allowed",
            "cross-account-cannot-create",
            "cross-account-denied",
            "present-though-denied",
        ],
    )
    def test_plan(
        self,
        target: Site,
        repository: str,
        dest_digest: str | None,
        exists: bool,
        action: TagAction,
        reason_part: str,
    ) -> None:
        """Same digest is up to date; otherwise the policy decides between copy and denied;
        the plan says whether the destination holds the repository (a tag there says so)."""
        plan = plan_tag(
            SOURCE,
            target,
            repository=repository,
            tag="v1",
            source_digest=OLD,
            dest_digest=dest_digest,
            repository_exists=exists,
        )
        assert plan.action is action
        assert reason_part in plan.reason
        assert plan.key == JobKey("use1", repository, OLD, "v1", target.name)
        assert plan.dest_repository is (exists or dest_digest is not None)

    @pytest.mark.parametrize(
        ("action", "recorded", "expected"),
        [
            (TagAction.COPY, None, TagAction.COPY),
            (TagAction.COPY, JobState.COMPLETE, TagAction.REPAIR),
            (TagAction.COPY, JobState.SUPERSEDED, TagAction.REPAIR),
            (TagAction.COPY, JobState.FAILED, TagAction.COPY),
            (TagAction.COPY, JobState.IN_PROGRESS, TagAction.COPY),
            (TagAction.DENIED, JobState.COMPLETE, TagAction.DENIED),
            (TagAction.UP_TO_DATE, JobState.COMPLETE, TagAction.UP_TO_DATE),
        ],
        ids=[
            "new",
            "complete-repairs",
            "superseded-repairs",
            "failed-requeues",
            "running",
            "denied",
            "up-to-date",
        ],
    )
    def test_after_journal(
        self, action: TagAction, recorded: JobState | None, expected: TagAction
    ) -> None:
        """Only a copy whose job is already final (COMPLETE, or SUPERSEDED: active-active seed
        3121, a restore never reaching the other side) turns into a direct repair."""
        plan = TagPlan(JobKey("use1", "prod/app", OLD, "v1", "usw2"), action, "why")
        assert after_journal(plan, recorded).action is expected


# An active-active pair: "a" and "b" replicate to each other; the plan copies b's OLD to a,
# where the tag names NEW.
PAIR_COPY = TagPlan(JobKey("b", "app", OLD, "v1", "a"), TagAction.COPY, "why", NEW)
DONE, PENDING, RETRY, FAILED = (
    JobState.COMPLETE, JobState.PENDING, JobState.RETRY_WAIT, JobState.FAILED,
)  # fmt: skip


def job(src: str, dst: str, digest: str, state: JobState, finished: float | None = 1.0,
        tag: str | None = "v1", pushed: float | None = None) -> TagRecord:  # fmt: skip
    """A copy job of the pair's repository."""
    return TagRecord(src, dst, digest, tag, state, finished if state is DONE else None, pushed)


HOLDS = [
    ("a-push-not-replicated-yet", [job("a", "b", NEW, PENDING)]),
    ("a-push-waiting-to-retry", [job("a", "b", NEW, RETRY)]),
    ("b-tag-is-a-replica-of-a", [job("a", "b", OLD, DONE)]),
    (
        "b-tag-replica-of-a-after-a-copy-from-a-third",
        [job("c", "b", NEW, DONE, 1.0), job("a", "b", OLD, DONE, 2.0)],
    ),
    (
        "crossed-pushes-b-pushed-later",
        [job("a", "b", OLD, DONE, 2.0, pushed=1.0), job("b", "a", NEW, DONE, 2.0, pushed=1.5)],
    ),
]
COPIES = [
    ("nothing-recorded", []),
    ("b-tag-pushed-at-b-since", [job("a", "b", NEW, DONE, 1.0), job("a", "b", OLD, DONE, 0.5)]),
    ("b-tag-from-a-third-registry", [job("c", "b", OLD, DONE)]),
    (
        "b-pushed-again-after-a-replica",
        [job("a", "b", NEW, DONE, 1.0), job("b", "a", NEW, DONE, 2.0)],
    ),
    ("a-push-of-another-tag", [job("a", "b", NEW, PENDING, tag="v2")]),
    ("a-push-failed", [job("a", "b", NEW, FAILED)]),
    ("b-replica-of-another-digest", [job("a", "b", NEW, DONE)]),
    (
        "crossed-pushes-a-pushed-later",
        [job("a", "b", OLD, DONE, 2.0, pushed=1.5), job("b", "a", NEW, DONE, 2.0, pushed=1.0)],
    ),
]


class TestHoldNewer:
    @pytest.mark.parametrize("records", [c[1] for c in HOLDS], ids=[c[0] for c in HOLDS])
    def test_newer_destination_tag_is_held(self, records: list[TagRecord]) -> None:
        """A copy is held when the destination's tag holds a recorded unreplicated push, or the
        source's tag is the daemon's copy of an earlier write at the destination."""
        held = hold_newer(PAIR_COPY, records)
        assert held.action is TagAction.HELD
        assert held.key == PAIR_COPY.key

    @pytest.mark.parametrize("records", [c[1] for c in COPIES], ids=[c[0] for c in COPIES])
    def test_copy_goes_ahead(self, records: list[TagRecord]) -> None:
        """Without a recorded newer write at the destination the copy stays a copy."""
        assert hold_newer(PAIR_COPY, records) == PAIR_COPY

    @pytest.mark.parametrize(
        "plan",
        [
            TagPlan(PAIR_COPY.key, TagAction.COPY, "tag missing at the destination"),
            TagPlan(PAIR_COPY.key, TagAction.UP_TO_DATE, "same", OLD),
            TagPlan(PAIR_COPY.key, TagAction.DENIED, "policy", NEW),
        ],
        ids=["missing-at-destination", "up-to-date", "denied"],
    )
    def test_only_a_copy_over_a_tag_is_held(self, plan: TagPlan) -> None:
        """A tag missing at the destination has nothing to undo; other actions move nothing."""
        assert hold_newer(plan, [job("a", "b", NEW, PENDING)]) == plan

    @pytest.mark.parametrize(
        ("records", "held"),
        [
            ([job("a", "b", OLD, DONE), TagRecord("a", "b", OLD, None, DONE, 2.0, delete=True)],
             True),
            ([job("a", "b", OLD, DONE), TagRecord("a", "b", "", "v1", DONE, 2.0, delete=True)],
             True),
            ([job("a", "b", OLD, DONE)], False),
            ([TagRecord("a", "b", OLD, None, DONE, 2.0, delete=True)], False),
            ([job("a", "b", OLD, DONE), TagRecord("c", "b", OLD, None, DONE, 2.0, delete=True)],
             False),
            ([job("a", "b", OLD, DONE, 3.0),
              TagRecord("a", "b", OLD, None, DONE, 2.0, delete=True)], False),
        ],
        ids=["deleted-by-digest", "deleted-by-tag", "lost-not-deleted", "b-own-push",
             "deleted-at-a-third", "deleted-before-a-later-copy"],
    )  # fmt: skip
    def test_tag_deleted_at_the_destination_stays_deleted(
        self, records: list[TagRecord], held: bool
    ) -> None:
        """A copy to a destination that lost the repository (restore, wipe) is held only when
        the source's tag is the daemon's copy of the destination's and the destination's delete
        of it is journalled; otherwise the destination gets it back."""
        plan = TagPlan(PAIR_COPY.key, TagAction.COPY, "tag missing at the destination")
        assert (hold_newer(plan, records).action is TagAction.HELD) is held

    @pytest.mark.parametrize(
        ("records", "held"),
        [
            ([job("a", "b", OLD, DONE)], True),
            ([job("a", "b", OLD, DONE), TagRecord("a", "b", OLD, None, DONE, 2.0, delete=True)],
             True),
            ([job("a", "b", OLD, PENDING)], False),
            ([job("a", "b", OLD, RETRY)], True),
            ([job("a", "b", OLD, JobState.SUPERSEDED)], True),
            ([job("a", "b", NEW, RETRY)], False),
            ([job("a", "b", NEW, DONE)], False),
            ([job("c", "b", OLD, DONE)], False),
            ([job("a", "b", OLD, DONE), job("c", "b", OLD, DONE, 2.0)], False),
            ([], False),
        ],
        ids=["delete-not-journalled-yet", "delete-journalled", "replica-not-tried",
             "replica-tried-may-have-landed", "replica-superseded-may-have-landed",
             "tried-another-digest", "replica-of-another-digest", "b-tag-from-a-third",
             "b-set-since-by-a-third", "no-record"],
    )  # fmt: skip
    def test_tag_gone_where_the_repository_stays_was_deleted(
        self, records: list[TagRecord], held: bool
    ) -> None:
        """A destination that still holds the repository but not the tag deleted it (its
        event may not be journalled yet: queued while the daemon was down): the daemon's copy
        of the destination's own write is not copied back to it (history checker seeds 165,
        191), also when that copy was tried and did not end COMPLETE (its PUT may have landed:
        seed 4165); a tag the source holds of its own, or of a third registry, still is."""
        plan = TagPlan(PAIR_COPY.key, TagAction.COPY, "tag missing at the destination", None, True)
        assert (hold_newer(plan, records).action is TagAction.HELD) is held

    @pytest.mark.parametrize(
        ("records", "back", "at_origin", "parts", "replayed"),
        [
            ([job("a", "b", OLD, DONE)], True, False, True, True),
            ([job("a", "b", OLD, DONE)], False, False, True, False),
            ([job("a", "b", OLD, DONE)], True, True, False, "tag"),
            ([job("a", "b", OLD, DONE), TagRecord("a", "b", OLD, None, DONE, 2.0, delete=True)],
             True, False, True, False),
            ([job("c", "b", OLD, DONE)], True, False, True, False),
            ([job("a", "b", OLD, DONE)], True, False, False, False),
            ([job("a", "b", OLD, DONE)], True, None, True, False),
            ([job("a", "b", OLD, DONE)], True, None, False, False),
        ],
        ids=["lost-delete", "deletes-not-replicated-back", "image-still-at-origin",
             "delete-journalled", "b-tag-from-a-third", "origin-restored-without-its-parts",
             "origin-serves-another-image-for-the-digest",
             "origin-serves-another-image-and-lacks-the-parts"],
    )  # fmt: skip
    def test_lost_delete_is_replayed(
        self,
        records: list[TagRecord],
        back: bool,
        at_origin: bool | None,
        parts: bool,
        replayed: bool | str,
    ) -> None:
        """A copy back held because its origin (a) deleted the tag with no delete journalled
        (the event lost: a registry restarted with it queued, seed 4025) carries a's delete
        jobs to b, by digest then by tag, when a's deletes reach b, a no longer serves the image
        and still holds its parts (a delete leaves them); never when the delete is journalled,
        b's tag is not the daemon's copy of a's, or a lacks the parts (a restore from an older
        backup: b's copy may be the only one left), nor when a answers the digest with another
        image (None: a lying or broken registry tells nothing to delete by); only the tag's
        delete when a still serves the image (its tag moved to a newer push that was deleted:
        seed 4659)."""
        plan = TagPlan(PAIR_COPY.key, TagAction.COPY, "tag missing at the destination", None, True)
        found = replay_delete(
            hold_newer(plan, records),
            deletes_back=back,
            origin_has_digest=at_origin,
            origin_keeps_parts=parts,
        )
        undone = lost_delete_origin("", 1.0)  # of the copy they undo: job()'s, done at 1.0
        tag_delete = JobKey("a", "app", "", "v1", "b", JobKind.DELETE, undone)
        expected = (
            (tag_delete,) if replayed == "tag"
            else (JobKey("a", "app", OLD, None, "b", JobKind.DELETE, undone), tag_delete)
            if replayed else ()
        )  # fmt: skip
        assert found.deletes == expected

    def test_a_second_lost_delete_after_a_new_copy_is_replayed_as_new_work(self) -> None:
        """a's image copied to b (done at 1.0), deleted at a with the event lost and replayed
        (its delete jobs done at 2.0), copied again by a new push's event (3.0) and its delete
        lost again: the first replay's jobs, older than the new copy, do not hold it as a
        journalled delete, and the new replay's jobs have other keys than the first's (the
        journal would find those COMPLETE and do nothing)."""
        plan = TagPlan(PAIR_COPY.key, TagAction.COPY, "tag missing at the destination", None, True)

        def replayed(records: list[TagRecord]) -> TagPlan:
            return replay_delete(
                hold_newer(plan, records),
                deletes_back=True, origin_has_digest=False, origin_keeps_parts=True,
            )  # fmt: skip

        first_copy = job("a", "b", OLD, DONE, 1.0)
        first = replayed([first_copy])
        done = [
            TagRecord("a", "b", k.digest, k.tag, DONE, 2.0, delete=True, origin=k.origin)
            for k in first.deletes
        ]
        assert len(done) == 2
        assert replayed([first_copy, *done]).deletes == ()  # the delete is journalled, newer
        again = TagRecord("a", "b", OLD, "v1", DONE, 3.0, origin="push-2")
        second = replayed([first_copy, *done, again])
        assert [k.image for k in second.deletes] == [k.image for k in first.deletes]
        assert {k.origin for k in second.deletes}.isdisjoint({k.origin for k in first.deletes})

    def test_repair_over_a_newer_tag_is_held(self) -> None:
        """A repair (the copy's job is COMPLETE) over a newer destination tag is held too."""
        plan = TagPlan(PAIR_COPY.key, TagAction.REPAIR, "why", NEW)
        assert hold_newer(plan, [job("a", "b", OLD, DONE)]).action is TagAction.HELD


class TestRunOutcome:
    @pytest.mark.parametrize(
        ("total", "failed", "expected"),
        [
            (0, 0, RunOutcome.COMPLETE),
            (10, 0, RunOutcome.COMPLETE),
            (10, 10, RunOutcome.PARTIAL),
            (99, 99, RunOutcome.PARTIAL),
            (100, 49, RunOutcome.PARTIAL),
            (100, 50, RunOutcome.FAILED),
            (1000, 999, RunOutcome.FAILED),
        ],
        ids=["empty", "clean", "small-all-failed", "just-under-100", "under-half", "half", "most"],
    )
    def test_ecr_rule(self, total: int, failed: int, expected: RunOutcome) -> None:
        """FAILED needs at least half of at least 100 jobs failed; any failure is PARTIAL."""
        assert run_outcome(total, failed) is expected

    @pytest.mark.parametrize(
        ("total", "failed", "scan_errors", "expected"),
        [
            (0, 0, 1, RunOutcome.FAILED),
            (10, 0, 1, RunOutcome.PARTIAL),
            (100, 60, 1, RunOutcome.FAILED),
            (10, 0, 0, RunOutcome.COMPLETE),
        ],
        ids=["unlisted-source-nothing-done", "one-source-unlisted", "half-failed-anyway", "none"],
    )
    def test_scan_errors(
        self, total: int, failed: int, scan_errors: int, expected: RunOutcome
    ) -> None:
        """A source that could not be listed is never COMPLETE: FAILED when nothing was done
        (no catalog and no repository list), else PARTIAL."""
        assert run_outcome(total, failed, scan_errors=scan_errors) is expected

    def test_impossible_counts_raise(self) -> None:
        """More failures than jobs is a caller bug, not a verdict."""
        with pytest.raises(ValueError, match="not a count"):
            run_outcome(1, 2)


class TestDrift:
    @pytest.mark.parametrize(
        ("dest_digest", "exists", "expected"),
        [
            (OLD, True, None),
            (None, True, Drift.MISSING_TAG),
            (None, False, Drift.MISSING_REPOSITORY),
            (NEW, True, Drift.DIFFERENT_DIGEST),
        ],
        ids=["clean", "missing-tag", "missing-repository", "moved"],
    )
    def test_tag_drift(self, dest_digest: str | None, exists: bool, expected: Drift | None) -> None:
        """A tag drifts when absent (tag or whole repository) or at another digest."""
        assert (
            tag_drift(source_digest=OLD, dest_digest=dest_digest, repository_exists=exists)
            is expected
        )

    @pytest.mark.parametrize(
        ("source", "dest", "expected"),
        [
            (["a", "b"], ["a", "b"], ()),
            (["a"], ["c", "a", "b"], ("b", "c")),
            ([], [], ()),
        ],
        ids=["same", "two-extra", "empty"],
    )
    def test_extra_tags(
        self, source: list[str], dest: list[str], expected: tuple[str, ...]
    ) -> None:
        """Extra tags are the destination's tags the source lacks, sorted."""
        assert extra_tags(source, dest) == expected
