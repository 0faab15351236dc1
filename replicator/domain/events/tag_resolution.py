"""Tag-only pushes (Quay, Artifactory: a tag and no digest we can vouch for): what the source's
answer to a HEAD of the tag makes of the push, and what a source that could not answer does to
the message that named it.

A source that cannot answer for now (down, 5xx, a timeout) must not lose the push, nor hold
intake: the message is kept aside, deferred, and read again after the jobs' backoff, up to the
jobs' attempts; then it is rejected like any message the daemon cannot use.
"""

from __future__ import annotations

from dataclasses import dataclass

from replicator.domain.events import Ignored, IgnoreReason, PushEvent, TagPush
from replicator.domain.images.media import is_manifest_type
from replicator.domain.jobs import backoff_seconds

# The reason word of a message whose tag-only push could not be read at the source, whether it
# waits to be read again (deferred) or is given up (rejected).
UNRESOLVED_TAG = "unresolved_tag"


@dataclass(frozen=True, slots=True)
class TagHead:
    """What the source answered to a HEAD of the tag: its digest and media type ("" unsaid)."""

    digest: str
    media_type: str


def resolved_push(event: TagPush, head: TagHead | None) -> PushEvent | Ignored:
    """The push `event` names, with the digest its tag has at the source now (`head`, None
    when the tag is gone: ignored, TAG_NOT_FOUND); ignored when it names no manifest we copy."""
    if head is None:
        return Ignored(IgnoreReason.TAG_NOT_FOUND, event.event_id)
    media_type = head.media_type or None
    if media_type is not None and not is_manifest_type(media_type):
        return Ignored(IgnoreReason.UNSUPPORTED_MEDIA_TYPE, event.event_id)
    return PushEvent(
        event.source,
        event.repository,
        head.digest,
        event.tag,
        media_type,
        event.pushed_at,
        event.event_id,
    )


@dataclass(frozen=True, slots=True)
class Unresolved:
    """What a failed read of a message's tag does: `retry_in` seconds until it is read again
    (deferred), or None when the message is rejected; `reason` says which, and why."""

    retry_in: float | None
    reason: str


def after_unresolved(
    *,
    error: str,
    temporary: bool,
    attempts: int,
    max_attempts: int,
    jitter_fraction: float,
) -> Unresolved:
    """Judge the `attempts`-th failed read of a tag (the error's text, whether it is temporary):
    deferred with the jobs' backoff while a temporary error has attempts left, else rejected,
    saying after how many attempts when they are used up."""
    if attempts < 1:
        raise ValueError(f"attempts {attempts} is less than 1")
    if not temporary:
        return Unresolved(None, error)
    if attempts >= max_attempts:
        return Unresolved(None, f"gave up after {attempts} attempts: {error}")
    delay = backoff_seconds(attempts, jitter_fraction=jitter_fraction)
    return Unresolved(
        delay, f"attempt {attempts} of {max_attempts}, again in {delay:.0f}s: {error}"
    )
