"""domain.routing.untagged: when a replica the daemon left untagged is replayed a delete whose
event was lost, table-driven."""

from __future__ import annotations

import pytest

from replicator.domain.jobs import JobKey, JobKind, JobState
from replicator.domain.jobs.freshness import lost_delete_origin
from replicator.domain.routing.scan import TagRecord
from replicator.domain.routing.untagged import replay_untagged_delete

X = "sha256:" + "1" * 64
DONE, PENDING = JobState.COMPLETE, JobState.PENDING
# b's push of X, copied to a (done at 1.0), its tag since moved at a by a later copy.
COPY = TagRecord("b", "a", X, "v1", DONE, 1.0, origin="push-x")
REPLAYED = JobKey("b", "app", X, None, "a", JobKind.DELETE, lost_delete_origin("push-x", 1.0))


def facts(**changed: bool) -> dict[str, bool]:
    """The registries' facts of the case that is replayed, with `changed` ones."""
    return {
        "deletes_back": True, "origin_has_digest": False, "replica_has_digest": True,
        "origin_keeps_parts": True, **changed,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("records", "changed", "replayed"),
    [
        ([COPY], {}, True),
        ([COPY], {"deletes_back": False}, False),
        ([COPY], {"origin_has_digest": True}, False),
        ([COPY], {"replica_has_digest": False}, False),
        ([COPY], {"origin_keeps_parts": False}, False),
        ([COPY, TagRecord("b", "a", X, None, DONE, 2.0, delete=True)], {}, False),
        ([COPY, TagRecord("b", "a", X, None, PENDING, None, delete=True)], {}, False),
        ([COPY, TagRecord("b", "a", X, None, DONE, 0.5, delete=True)], {}, True),
        ([COPY, TagRecord("c", "a", X, None, DONE, 2.0, delete=True)], {}, True),
        ([COPY, TagRecord("a", "b", X, "v2", PENDING)], {}, False),
        ([COPY, TagRecord("a", "b", X, "v2", DONE, 0.5)], {}, True),
        ([COPY, TagRecord("b", "a", X, "v3", DONE, 2.0)], {}, False),
    ],
    ids=[
        "lost-delete", "deletes-not-replicated", "origin-still-serves-it", "gone-from-replica",
        "origin-restored-without-its-parts", "delete-journalled-since", "delete-on-its-way",
        "older-delete-of-an-earlier-push", "delete-from-a-third-registry",
        "replica-pushed-it-since", "replica-pushed-it-before", "copied-again-since",
    ],
)  # fmt: skip
def test_replay_untagged_delete(
    records: list[TagRecord], changed: dict[str, bool], replayed: bool
) -> None:
    """Replayed (by digest, of the copy it undoes) only when b's deletes reach a, b no longer
    serves X, a does, b keeps X's parts, and neither a delete of X from b to a since the copy,
    nor a's own push of X since, nor a later copy of X on the route is journalled."""
    found = replay_untagged_delete(COPY, records, repository="app", **facts(**changed))
    assert found == (REPLAYED if replayed else None)
