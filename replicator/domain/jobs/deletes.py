"""Delete replication at a destination: what to delete there, decided from what it holds.

A digest alone deletes that manifest (its tags go with it, as at the source). A tag deletes only
the tag, never more: nothing when the tag now points at another digest than the deleted one (a
newer push moved it). On a registry without tag deletion (distribution 2.8 answers 400
DIGEST_INVALID; the OCI 1.1 `DELETE /manifests/<tag>` is optional) the manifest is deleted by
digest only if no other tag there points at it, as ECR untags and deletes the last tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class DeleteAction(StrEnum):
    """What a delete job does at its destination."""

    MANIFEST = "manifest"  # DELETE the manifest by digest; its tags go with it
    TAG = "tag"  # DELETE the tag alone
    SKIP = "skip"  # nothing: the tag is gone already or now names another image
    REFUSE = "refuse"  # the delete cannot be done without deleting more than was deleted


@dataclass(frozen=True, slots=True)
class Deletion:
    """The decision: the action, the reference it deletes, and why when it deletes nothing."""

    action: DeleteAction
    reference: str = ""
    reason: str = ""


def plan_delete(*, digest: str, tag: str | None, tagged: str | None) -> Deletion:
    """The delete of `digest` and/or `tag`; `tagged` is the digest the destination's tag points
    at now (None when it has no such tag; not read for a digest-only delete)."""
    if not digest and not tag:
        return Deletion(DeleteAction.REFUSE, reason="delete job names neither digest nor tag")
    if not tag:
        return Deletion(DeleteAction.MANIFEST, digest)
    if tagged is None:
        return Deletion(DeleteAction.SKIP, reason=f"tag {tag} is not at the destination")
    if digest and tagged != digest:
        return Deletion(DeleteAction.SKIP, reason=f"tag {tag} now names {tagged}")
    return Deletion(DeleteAction.TAG, tag)


def plan_untag_unsupported(*, tag: str, tagged: str, others: Mapping[str, str | None]) -> Deletion:
    """On a registry that cannot delete a tag alone: delete `tagged` by digest unless another tag
    (`others`: every other tag there and the digest it names) points at it too."""
    sharing = sorted(other for other, digest in others.items() if digest == tagged)
    if sharing:
        return Deletion(
            DeleteAction.REFUSE,
            reason=f"the registry cannot delete tag {tag} alone and {tagged} is also tagged "
            f"{', '.join(sharing[:5])}; left in place",
        )
    return Deletion(DeleteAction.MANIFEST, tagged)


def waits_for_copy(
    *, delete_digest: str, delete_tag: str | None, copy_digest: str, copy_tag: str | None
) -> bool:
    """Whether a delete job (of `delete_digest`, or of `delete_tag`; "" / None when it names
    only the other) must wait, unclaimed, for a copy job working at the same destination and
    repository (of `copy_digest`, under `copy_tag`) to end: when the copy puts the manifest or
    the tag the delete removes.

    A copy asks the source a last time before its manifest PUT (engine/tag_guard.py), but that
    PUT can take seconds, retried through a destination's outage. A delete made at the source
    meanwhile has its job run in that time, find nothing to delete, and end; the PUT then
    brings the deleted image back for good. Held until the copy ends, the delete removes what
    the copy put; a copy that starts after the delete asks the source after the delete, and
    puts nothing of what it no longer serves. The journal's claim (journal/queries.py)
    applies this rule; tests check the two agree."""
    if delete_digest and copy_digest == delete_digest:
        return True
    return delete_tag is not None and copy_tag == delete_tag
