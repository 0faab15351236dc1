"""Whether a job still follows what its source serves now, and which event a job is of.

The destination must end on what the source serves now, whatever order events arrive in and
whatever a publisher claims. The engine asks the source at the last moment (a HEAD of the tag
before the tag PUT, a HEAD of what a delete names before deleting) and these functions decide
from the answer:

- PROCEED: the source agrees with the job; do it.
- SUPERSEDED: the source moved on since the event (the tag was pushed again with another
  digest): a newer event's job does the work, this one leaves the tag alone and says so.
- REFUSED: the event contradicts the source (a delete of what the source still serves): a
  forged or mistaken event; nothing is done and the reason is recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

# Longest event id kept as a job's origin as it is; distribution and EventBridge ids are UUIDs
# (36 characters). A longer one (hand-made) is kept as its SHA-256, so a hostile id of any size
# costs 71 characters of journal and still tells events apart.
MAX_ORIGIN_CHARS = 128
_HASHED_ORIGIN_PREFIX = "sha256:"
# The origin of the delete jobs a reconcile journals for a delete whose event was lost for good
# (domain.routing.scan.replay_delete). They are of the copy they undo, not of the scan: the same
# copy's lost delete is the same work on every pass, while a later copy of the same image (the
# user pushed it again) that loses its delete too is new work (a scan's NO_ORIGIN key would
# find the first replay's COMPLETE job and do nothing). No event id keeps this prefix.
LOST_DELETE_ORIGIN_PREFIX = "lost-delete:"
# distribution (registry/handlers/manifests.go, 2.8 and 3.x) sends a manifest's push event from
# the manifest store's Put, before the handler links the tag: a job can ask the source for the
# tag before it exists (35 ms after the event on a loaded machine, active-active seed 3121:
# taken for deleted, the restore never reached the other side). A tag missing within this long
# of its push event's arrival is asked again until then; the link is written milliseconds
# after the event is queued, so this is a bound for a starved registry, not a typical wait.
TAG_LINK_GRACE_SECONDS = 2.0


class Verdict(StrEnum):
    """What a job does after asking the source."""

    PROCEED = "proceed"
    SUPERSEDED = "superseded"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Freshness:
    """A verdict and, unless PROCEED, the reason recorded with the job."""

    verdict: Verdict
    reason: str = ""


PROCEED = Freshness(Verdict.PROCEED)


def event_origin(event_id: str) -> str:
    """The origin of the jobs of the event `event_id`: the id itself, or its SHA-256 when it is
    too long to keep (or could be taken for a hashed one)."""
    if not event_id:
        raise ValueError("an event id is never empty (the parser requires one)")
    reserved = event_id.startswith((_HASHED_ORIGIN_PREFIX, LOST_DELETE_ORIGIN_PREFIX))
    if len(event_id) <= MAX_ORIGIN_CHARS and not reserved:
        return event_id
    return _HASHED_ORIGIN_PREFIX + hashlib.sha256(event_id.encode()).hexdigest()


def lost_delete_origin(copy_origin: str, copy_finished_at: float | None) -> str:
    """The origin of the replayed delete jobs of the copy of origin `copy_origin` that finished
    at `copy_finished_at` (seconds since the epoch; None while unfinished): readable, or hashed
    when too long to keep."""
    finished = "" if copy_finished_at is None else f"@{copy_finished_at:.6f}"
    origin = f"{LOST_DELETE_ORIGIN_PREFIX}{copy_origin}{finished}"
    if len(origin) <= MAX_ORIGIN_CHARS:
        return origin
    return LOST_DELETE_ORIGIN_PREFIX + hashlib.sha256(origin.encode()).hexdigest()


def check_tag(
    *, image: str, tag: str, digest: str, source_digest: str | None, deletes_follow: bool = False
) -> Freshness:
    """Whether a job copying `digest` may point `tag` at it, the source's tag now naming
    `source_digest` (None: the source has no such tag); `deletes_follow`: the source's deletes
    of this tag are replicated to this destination.

    A tag that names another digest now was pushed again since this job's event (a rollback
    A -> B -> A, or two events delivered out of order): the newer push's job sets it, and this
    one must not move it back. A tag gone from the source was deleted since: where deletes are
    replicated, the delete is the newest write and its job may already have run (deleting
    nothing yet), so the tag is not set; where they are not, the destination keeps what was
    pushed (as ECR does) and the tag is set as the event said.
    """
    if source_digest is None and deletes_follow:
        return Freshness(
            Verdict.SUPERSEDED,
            f"{image}:{tag} was deleted at the source after this push and deletes are "
            "replicated: the image was copied untagged",
        )
    if source_digest is None or source_digest == digest:
        return PROCEED
    return Freshness(
        Verdict.SUPERSEDED,
        f"{image}:{tag} at the source now names {source_digest}, not {digest}: a newer push "
        "sets the tag; the image was copied untagged",
    )


def absent_tag_grace(*, from_push: bool, since_event: float) -> float:
    """Seconds more a job asks the source again for a tag it finds missing, `since_event`
    seconds after its push event arrived: until TAG_LINK_GRACE_SECONDS after it for a push's
    job (the tag may not be linked yet, TAG_LINK_GRACE_SECONDS), none for a scan's (it read
    the tag itself, linked)."""
    if not from_push:
        return 0.0
    return max(0.0, TAG_LINK_GRACE_SECONDS - since_event)


class Untagged(StrEnum):
    """What a job that may not set its tag (SUPERSEDED) still puts at the destination."""

    DIGEST = "digest"  # the image by digest
    ASK = "ask"  # the image by digest if the source still serves it (keep_untagged)
    NOTHING = "nothing"  # nothing


def untagged_copy(*, from_push: bool, deletes_follow: bool) -> Untagged:
    """Whether a job whose tag moved on or went away at the source still copies its image by
    digest. A push's job does (the push happened: its image stays pullable by digest, as at the
    source), asking first where deletes are replicated (`keep_untagged`). A scan's job
    (reconcile, backfill) never does: it stood only for the tag, which the source no longer
    gives that image; copied by digest, an image read at B just before A deleted it (its
    delete's event not yet in) went back to A untagged, and A's delete was undone for good
    (active-active seed 3105: then A refused B's delete job as "still served")."""
    if not from_push:
        return Untagged.NOTHING
    return Untagged.ASK if deletes_follow else Untagged.DIGEST


def keep_untagged(*, deletes_follow: bool, source_has_digest: bool) -> bool:
    """Whether a job that may not set its tag still puts its image at the destination by
    digest. Yes when the tag moved on to another image (the older image stays at the source
    too) or when deletes are not replicated; no when the image itself is gone from the source
    and its delete is replicated: the delete's job may have run already (deleting nothing
    yet), and a copy by digest would bring back, untagged, what the source deleted."""
    return source_has_digest or not deletes_follow


def check_vanished(*, image: str, digest: str, source_has_digest: bool) -> Freshness:
    """Whether a copy that found its image missing at the source (a 404 while reading it) is
    overtaken, the source now serving `digest` or not (`source_has_digest`).

    A digest the source no longer serves was deleted there after this push: the delete is the
    newest write, nothing is left to copy, and no retry can change that (SUPERSEDED). Left
    FAILED, the push counted in the recovery point until a later push of its tag, which for a
    tag deleted for good never comes: the gauge read its age for ever. A digest the source
    still serves is missing something else (a blob: a broken source), and the failure stands
    (PROCEED with the error)."""
    if source_has_digest:
        return PROCEED
    return Freshness(
        Verdict.SUPERSEDED,
        f"{image}@{digest} was deleted at the source after this push, before it was copied: "
        "nothing to copy",
    )


def check_delete(
    *, image: str, digest: str | None, tag: str | None, source_digest: str | None
) -> Freshness:
    """Whether a delete of `tag` (or of `digest` when no tag) may be replicated, the source now
    answering `source_digest` for the tag (or the digest), None when it has none (404).

    Only what the source confirms gone is deleted: a delete of what the source still serves is
    forged or mistaken, and refused. A tag the source serves with another digest than the
    delete names was pushed again since the delete: the re-push's job follows it.
    """
    if source_digest is None:
        return PROCEED
    if tag is not None and digest and source_digest != digest:
        return Freshness(
            Verdict.SUPERSEDED,
            f"{image}:{tag} was pushed again at the source ({source_digest}) after the delete of "
            f"{digest}: nothing deleted",
        )
    named = f"{image}:{tag}" if tag is not None else f"{image}@{digest}"
    return Freshness(
        Verdict.REFUSED,
        f"the source still serves {named} ({source_digest}): a delete is replicated only once "
        "the source answers 404; nothing deleted",
    )
