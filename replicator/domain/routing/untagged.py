"""Whether a replica the daemon left untagged is the leftover of a delete whose event was lost.

A copy set the replica's tag to X; a later copy of the same route set that tag to Y, leaving X
untagged at the replica (still served by digest). When the origin then deleted X and that
delete's event was lost for good (a registry restarted with its notification still queued:
distribution keeps the queue in memory), the replica keeps serving X for ever: no tag of
either side differs, so the tag scan finds nothing to do (history checker, active-active seed
9035). The I/O side (scan/untagged_replicas.py) asks the journal for such copies and both
registries for the digest; this decides.
"""

from __future__ import annotations

from collections.abc import Iterable

from replicator.domain.jobs import JobKey, JobKind
from replicator.domain.jobs.freshness import lost_delete_origin
from replicator.domain.routing.scan import TagRecord


def replay_untagged_delete(
    copy: TagRecord,
    records: Iterable[TagRecord],
    *,
    repository: str,
    deletes_back: bool,
    origin_has_digest: bool,
    replica_has_digest: bool,
    origin_keeps_parts: bool,
) -> JobKey | None:
    """The delete job (by digest) the origin's lost delete of `copy`'s image would have made at
    the replica, or None.

    `copy` is a COMPLETE copy whose tag the daemon later moved to another digest at the replica;
    `records` the journal's jobs of its digest in the repository. Replayed only when
    - the origin's deletes reach the replica (`deletes_back`), the origin no longer serves the
      digest and the replica still does;
    - the origin still holds the image's parts (`origin_keeps_parts`: a manifest DELETE leaves
      them until garbage collection, a restore from a backup older than the push never had
      them: then the replica may be the only copy left, and is kept);
    - no delete of the digest on that route is journalled since the copy (its job carries it,
      or carried it: an older one deleted an earlier push of the image); and
    - the replica did not push the image itself since (a job of it from the replica): that
      write is the newer one, and the delete would undo it; nor was the image copied again on
      the route since (that later copy is the one judged).
    The job asks the origin again before it deletes; its origin names the copy it undoes (two
    lost deletes of two pushes of one image are two jobs)."""
    if not deletes_back or origin_has_digest or not replica_has_digest:
        return None
    if not origin_keeps_parts:
        return None
    since = copy.finished_at
    origin, replica = copy.source, copy.destination

    def newer(record: TagRecord) -> bool:
        return since is None or record.finished_at is None or record.finished_at >= since

    for record in records:
        if record.digest != copy.digest or not newer(record) or record == copy:
            continue
        route = (record.source, record.destination)
        if record.delete and route == (origin, replica):
            return None
        if not record.delete and (record.source == replica or route == (origin, replica)):
            return None  # pushed back by the replica, or copied again: judged by that copy
    return JobKey(
        origin, repository, copy.digest, None, replica, JobKind.DELETE,
        lost_delete_origin(copy.origin, copy.finished_at),
    )  # fmt: skip
