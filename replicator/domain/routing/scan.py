"""Decisions of `backfill` and `verify`: facts about a tag at the source and at a destination in,
what to do (or what drift it is) out.

The I/O side (replicator/scan/scanning.py, replicator/scan/verify.py) gathers the facts: the
source tag's digest, the destination's digest for that tag (None when the tag is absent),
whether the repository exists there, the journal's record of the job. Everything decided from
them lives here and is tested table-driven without a registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from replicator.domain.jobs import NO_ORIGIN, TERMINAL_STATES, JobKey, JobKind, JobState
from replicator.domain.jobs.freshness import lost_delete_origin
from replicator.domain.routing import Site, admit_replication, destinations
from replicator.domain.routing.rules import match_deletes

# ECR's backfill rule: a run is FAILED when at least half of its jobs failed, once it has at
# least this many jobs; a handful of failures in a small run is reported job by job instead.
FAILED_RUN_MIN_JOBS = 100
FAILED_RUN_SHARE = 0.5


class TagAction(StrEnum):
    """What backfill does about one tag at one destination."""

    UP_TO_DATE = "up_to_date"  # the destination serves the source's digest under the tag
    COPY = "copy"  # missing or different: journal a copy job
    DENIED = "denied"  # the destination's policy refuses it: journal it FAILED (POLICY_DENIED)
    REPAIR = "repair"  # the journal holds the job COMPLETE, yet the destination lost the image
    HELD = "held"  # the destination's tag is newer than the source's: moving it would undo it


@dataclass(frozen=True, slots=True)
class TagPlan:
    """The decision for one (repository, tag, destination): the job key, the action and why;
    `dest_digest` is what the destination's tag names now (None: no such tag);
    `dest_repository`: the destination knows the repository, tags or none (False when it does
    not, or when that was not asked)."""

    key: JobKey
    action: TagAction
    reason: str
    dest_digest: str | None = None
    dest_repository: bool = False
    # HELD because the destination deleted the tag and no delete of it is journalled (its
    # event not in yet, or lost for good): `replay_delete` may journal its delete's jobs.
    unjournalled_delete: bool = False
    # The delete jobs the destination's lost delete event would have made (replay_delete).
    deletes: tuple[JobKey, ...] = ()
    # With unjournalled_delete: the origin of those delete jobs, that of the copy they undo
    # (domain.jobs.freshness.lost_delete_origin).
    replay_origin: str = NO_ORIGIN


@dataclass(frozen=True, slots=True)
class TagRecord:
    """A job of the journal as `hold_newer` reads it: who copied (or deleted) what, under which tag,
    its state, when it finished and when its push was made at the source (seconds since the
    epoch; None while unfinished, or for a scan's job, which has no push time)."""

    source: str
    destination: str
    digest: str
    tag: str | None
    state: JobState
    finished_at: float | None = None
    pushed_at: float | None = None
    delete: bool = False  # a delete job (digest "" or tag None when it named only the other)
    origin: str = NO_ORIGIN  # the event the job is of (domain.jobs.JobKey.origin)


def targets(
    source: Site,
    sites: Mapping[str, Site],
    *,
    repository: str,
    tag: str | None,
    only: str | None = None,
) -> tuple[Site, ...]:
    """The configured destinations the source's rules send `repository:tag` to (only `only`,
    when given), in rule order."""
    chosen = destinations(source, sites, repository=repository, tag=tag)
    return tuple(site for site in chosen if only is None or site.name == only)


def deletes_reach(source: Site, target: Site, *, repository: str, tag: str | None) -> bool:
    """Whether a delete of `repository[:tag]` at the source is replicated to `target`."""
    return target.location in match_deletes(
        source.replication, source=source.location, repository=repository, tag=tag
    )


def plan_tag(
    source: Site,
    target: Site,
    *,
    repository: str,
    tag: str,
    source_digest: str,
    dest_digest: str | None,
    repository_exists: bool,
    repository_known: bool = False,
) -> TagPlan:
    """Up to date, copy or denied: the policy is asked only when there is something to copy, and
    for ecr:CreateRepository too when the repository does not exist at the destination;
    `repository_known`: the destination knows the repository even without a tag (a registry
    whose last tag of it was deleted still does, one restored or wiped does not)."""
    key = JobKey(source.name, repository, source_digest, tag, target.name)
    held = repository_known or repository_exists or dest_digest is not None
    if dest_digest == source_digest:
        return TagPlan(
            key, TagAction.UP_TO_DATE, "same digest at the destination", dest_digest, held
        )
    decision = admit_replication(source, target, repository, repository_exists=repository_exists)
    if not decision.allowed:
        return TagPlan(key, TagAction.DENIED, decision.reason, dest_digest, held)
    if dest_digest is None:
        return TagPlan(key, TagAction.COPY, "tag missing at the destination", None, held)
    return TagPlan(key, TagAction.COPY, f"destination has {dest_digest}", dest_digest, held)


def asks_known(target: Site) -> bool:
    """Whether a scan asks `target` if it knows a repository none of whose tags it looked at is
    there: when `target` replicates too, so it may be the origin of the source's tag
    (`hold_newer` tells a destination that deleted the tag, even its last one, from one that
    lost its storage by it)."""
    return bool(target.replication.rules)


def after_journal(plan: TagPlan, recorded: JobState | None) -> TagPlan:
    """A copy whose job the journal already holds COMPLETE or SUPERSEDED cannot be re-queued
    (both are final): the destination lost the image since, or the source serves again what it
    had deleted when that job ran (a restore: the scan's job of the key ended SUPERSEDED, and
    the restore's own job can find the tag not yet linked at the source), so the copy is
    repaired directly."""
    if plan.action is TagAction.COPY and recorded in (JobState.COMPLETE, JobState.SUPERSEDED):
        return replace(
            plan, action=TagAction.REPAIR, reason=f"{plan.reason}, though its job is {recorded}"
        )
    return plan


def hold_newer(plan: TagPlan, records: Iterable[TagRecord]) -> TagPlan:
    """A copy that would move the destination's tag off a newer write of it is held (the one
    rule for who wins: a tag ends on the newest write, and a reconcile never undoes one).

    `records` are the journal's copy jobs of the repository. The destination's tag is newer
    than the source's when the journal records
    - a push of that tag at the destination not yet replicated to this source (its job is
      unfinished): its own job carries it here, and this copy would undo it; or
    - the source's tag as the daemon's own replica of an earlier write at the destination (the
      last job that set the source's tag copied this digest from the destination): the
      destination was written since, and that write travels the other way. When the
      destination's tag is in turn the daemon's replica of a push at the source (two pushes
      of the tag, one at each side, crossed on their way), the later push wins.
    A tag missing at the destination is held only when the source's tag is the daemon's copy of
    the destination's, and the destination deleted it since: the journal records its delete,
    or the destination still knows the repository (it lost the tag, even its last one, and not
    its storage: a delete whose event is not journalled yet, queued while the daemon was down
    or still on its way). A destination that lost the repository whole (a restore, a wipe)
    gets the tag back."""
    if plan.action not in (TagAction.COPY, TagAction.REPAIR):
        return plan
    source, target, tag = plan.key.source, plan.key.destination, plan.key.tag
    every = list(records)
    if plan.dest_digest is None:
        return _hold_deleted(plan, every)
    found = [r for r in every if r.tag == tag and not r.delete]
    pending = [
        r for r in found
        if r.source == target and r.destination == source and r.state not in TERMINAL_STATES
    ]  # fmt: skip
    if pending:
        return replace(
            plan,
            action=TagAction.HELD,
            reason=f"{target}'s push of {pending[0].digest} under {tag} is not replicated yet; "
            f"{plan.key.digest} would undo it",
        )
    ours = _last_set(found, source)
    if ours is None or ours.source != target or ours.digest != plan.key.digest:
        return plan  # the source's tag is its own push: it is the newer one
    theirs = _last_set(found, target)
    crossed = theirs is not None and theirs.source == source and theirs.digest == plan.dest_digest
    if crossed and theirs is not None and _push_time(ours) > _push_time(theirs):
        # Crossed pushes: each side holds the other's. The later push wins.
        return plan
    return replace(
        plan,
        action=TagAction.HELD,
        reason=f"{source}'s {tag} is the daemon's copy of an earlier {target} write; "
        f"{target}'s {plan.dest_digest} is newer",
    )


def _hold_deleted(plan: TagPlan, records: list[TagRecord]) -> TagPlan:
    """A copy to a destination without the tag: held when the source's tag is the daemon's copy
    of the destination's write and the destination deleted it since (its delete is journalled,
    or the destination lost this tag and still knows the repository)."""
    source, target, tag = plan.key.source, plan.key.destination, plan.key.tag
    tagged = [r for r in records if r.tag == tag and not r.delete]
    ours = _last_set(tagged, source) or _tried(tagged, target, source, plan.key.digest)
    if ours is None or ours.source != target or ours.digest != plan.key.digest:
        return plan
    # A delete counts only when it is not older than the copy: one that ran before the copy
    # (the user pushed the image again since) deleted an earlier write, and a lost delete of
    # this copy is still to be replayed.
    since = ours.finished_at
    deleted = any(
        r.delete and r.source == target and r.destination == source
        and (r.digest == plan.key.digest or (r.tag is not None and r.tag == tag))
        and (since is None or r.finished_at is None or r.finished_at >= since)
        for r in records
    )  # fmt: skip
    unjournalled = not deleted
    if deleted:
        why = "the delete is newer"
    elif plan.dest_repository:
        # A copy back would bring the image back where it was written and deleted, before the
        # delete's own job (from its event) reaches the source: both sides would keep it.
        why = (
            f"{target} knows the repository without the tag: it deleted it (the delete's "
            "event is not journalled yet)"
        )
    else:
        return plan
    return replace(
        plan,
        action=TagAction.HELD,
        reason=f"{target} deleted {tag} ({plan.key.digest}) after the daemon copied it to "
        f"{source}: {why}",
        unjournalled_delete=unjournalled,
        replay_origin=lost_delete_origin(ours.origin, ours.finished_at) if unjournalled else "",
    )


def replay_delete(
    plan: TagPlan, *, deletes_back: bool, origin_has_digest: bool | None, origin_keeps_parts: bool
) -> TagPlan:
    """A copy back held because its destination (the origin of the tag) deleted it with no delete
    journalled, given whether that origin's deletes of the tag reach the plan's source
    (`deletes_back`) and whether the origin still serves the image by digest: the delete jobs
    its event would have made (the manifest by digest, then the tag) are added to the plan.

    A registry restarted with a notification still queued (distribution keeps its queue in
    memory) loses that event for good: the held copy kept the delete from being undone, but the
    daemon's replica stayed at the other side for ever (active-active seed 4025). The origin
    knowing the repository without the tag, the image gone there by digest and the other
    side's tag the daemon's own copy of it are what a delete leaves; a registry restored from
    an older backup that kept the repository looks the same, and loses those replicas too
    (README, "Active-active"), except in what it keeps of the image: a manifest DELETE leaves
    the image's parts in the repository (distribution keeps its blobs linked until garbage
    collection, an index's children stay as untagged manifests), while a backup older than the
    push never had them. So the delete is replayed only when the origin still holds the image's
    parts (`origin_keeps_parts`: its config blob, or an index's first child); without them (a
    restore, or a delete followed by GC: the two cannot be told apart) the replica is kept —
    deleting the other side's only copy after a restore would lose the image in both regions.
    Each delete job asks the origin again before it deletes.

    The facts are read from what the origin serves, not from what it says: `origin_has_digest`
    is True when its bytes for the digest hash to it, False when it has none (404), and None
    when it answers the digest with another image — a registry that lies, or is broken, says
    nothing to act on, and the replica is kept (a tag delete at a registry that cannot delete
    a tag alone deletes the image by digest); `origin_keeps_parts` likewise counts only a part
    whose bytes hash to its digest, never a HEAD's 200."""
    if (
        plan.action is not TagAction.HELD
        or not plan.unjournalled_delete
        or not deletes_back
        or plan.key.tag is None
    ):
        return plan
    origin, replica = plan.key.destination, plan.key.source
    repository, digest, tag = plan.key.repository, plan.key.digest, plan.key.tag
    undone = plan.replay_origin
    if origin_has_digest is None:
        return replace(
            plan,
            reason=f"{plan.reason}; not replayed as a delete: {origin} answers {digest} with "
            f"another image, so the replica at {replica} is kept",
        )
    if origin_has_digest:
        # The origin dropped the tag but keeps the image (the tag moved to a newer push that was
        # deleted, or the tag alone was deleted; seed 4659): its tag's delete is replayed, never
        # the image's, and no image data is lost at the replica even after a restore.
        return replace(
            plan,
            reason=f"{plan.reason}; the tag's delete never came: journalled from the scan",
            deletes=(JobKey(origin, repository, "", tag, replica, JobKind.DELETE, undone),),
        )
    if not origin_keeps_parts:
        return replace(
            plan,
            reason=f"{plan.reason}; not replayed as a delete: {plan.key.destination} lacks the "
            "image's parts too (restored from an older backup, or garbage-collected), so the "
            f"replica at {plan.key.source} is kept",
        )
    return replace(
        plan,
        reason=f"{plan.reason}; its delete never came: journalled from the scan",
        deletes=(
            JobKey(origin, repository, digest, None, replica, JobKind.DELETE, undone),
            JobKey(origin, repository, "", tag, replica, JobKind.DELETE, undone),
        ),
    )


def _tried(
    records: Iterable[TagRecord], origin: str, replica: str, digest: str
) -> TagRecord | None:
    """A copy of `digest` from `origin` to `replica` that was tried (not PENDING) without
    finishing COMPLETE: its manifest PUT may have landed all the same (the registry came back
    while the job saw the error), so `replica`'s tag may be the daemon's copy of `origin`'s
    write (bench seed active-active 4165: copied back to A after A's delete, both sides kept
    it)."""
    return next(
        (
            r for r in records
            if (r.source, r.destination, r.digest) == (origin, replica, digest)
            and r.state not in (JobState.PENDING, JobState.COMPLETE)
        ),
        None,
    )  # fmt: skip


def _last_set(records: Iterable[TagRecord], registry: str) -> TagRecord | None:
    """The last finished job that set the tag at `registry`."""
    setting = [
        r for r in records
        if r.destination == registry and r.state is JobState.COMPLETE and r.finished_at is not None
    ]  # fmt: skip
    return max(setting, key=lambda r: r.finished_at or 0.0, default=None)


def _push_time(record: TagRecord) -> float:
    """When the copied push was made at its source (a scan's job: when it finished)."""
    return record.pushed_at if record.pushed_at is not None else record.finished_at or 0.0


class RunOutcome(StrEnum):
    """How a backfill run ended."""

    COMPLETE = "COMPLETE"  # every job done (or nothing to do)
    PARTIAL = "PARTIAL"  # some jobs failed; they are listed
    FAILED = "FAILED"  # at least half of at least FAILED_RUN_MIN_JOBS jobs failed (ECR's rule)


def run_outcome(total: int, failed: int, *, scan_errors: int = 0) -> RunOutcome:
    """ECR's backfill verdict from the number of jobs and of failed ones; a source's catalog or
    tag list that could not be read (`scan_errors`) makes the run PARTIAL, and FAILED when it
    left nothing to do (a source without a catalog and no repository list copies nothing:
    that is no COMPLETE run)."""
    if failed < 0 or total < failed or scan_errors < 0:
        raise ValueError(f"{failed} failed jobs out of {total} is not a count")
    if total >= FAILED_RUN_MIN_JOBS and failed >= total * FAILED_RUN_SHARE:
        return RunOutcome.FAILED
    if scan_errors and total == 0:
        return RunOutcome.FAILED
    return RunOutcome.PARTIAL if failed or scan_errors else RunOutcome.COMPLETE


class Drift(StrEnum):
    """What `verify` found wrong at a destination."""

    MISSING_REPOSITORY = "missing_repository"
    MISSING_TAG = "missing_tag"
    DIFFERENT_DIGEST = "different_digest"
    MISSING_MANIFEST = "missing_manifest"
    MISSING_BLOB = "missing_blob"
    EXTRA_TAG = "extra_tag"


def tag_drift(
    *, source_digest: str, dest_digest: str | None, repository_exists: bool
) -> Drift | None:
    """The tag's own drift (None when it resolves to the source's digest); a tag absent from a
    repository that does not exist is reported once as the repository, by the caller."""
    if dest_digest == source_digest:
        return None
    if dest_digest is None:
        return Drift.MISSING_TAG if repository_exists else Drift.MISSING_REPOSITORY
    return Drift.DIFFERENT_DIGEST


def extra_tags(source_tags: Iterable[str], dest_tags: Iterable[str]) -> tuple[str, ...]:
    """Destination tags the source does not have, sorted (drift only with delete replication,
    which the caller checks per tag with `deletes_reach`)."""
    return tuple(sorted(set(dest_tags) - set(source_tags)))
