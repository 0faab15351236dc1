"""What a bus message reports: the events the daemon acts on (PushEvent, TagPush, DeleteEvent),
the ones it skips (Ignored) and the reasons a payload is rejected or an event needs no work.

`replicator.domain.events.payloads` parses a bus message into these.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectReason(StrEnum):
    """Why a payload is rejected: stable snake_case words, used as metric labels."""

    INVALID_JSON = "invalid_json"
    TOO_LARGE = "too_large"
    UNKNOWN_SOURCE = "unknown_source"
    UNKNOWN_ACCOUNT_REGION = "unknown_account_region"
    SOURCE_MISMATCH = "source_mismatch"
    INVALID_REPOSITORY = "invalid_repository"
    INVALID_DIGEST = "invalid_digest"
    INVALID_TAG = "invalid_tag"
    UNSUPPORTED_EVENT = "unsupported_event"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FORMAT = "unknown_format"


class IgnoreReason(StrEnum):
    """Why a well-formed event needs no replication work."""

    BLOB_PUSH = "blob_push"
    BLOB_MOUNT = "blob_mount"
    PULL = "pull"
    REPOSITORY_DELETE = "repository_delete"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_SUCCESSFUL = "not_successful"
    REPLICATION_EVENT = "replication_event"
    TAG_NOT_FOUND = "tag_not_found"  # a tag-only push whose tag is gone from the source
    # An action this parser does not know (GitLab's registry sends `rename`): acknowledged, so
    # a sender that retries refused deliveries does not hold its later pushes behind it.
    UNKNOWN_ACTION = "unknown_action"


@dataclass(frozen=True, slots=True)
class PushEvent:
    """A manifest (image, index or artifact) was pushed to `source`.

    `references` holds the digests of the child manifests of an index push (distribution lists
    them; an image manifest's config and layers are not kept). `media_type` is None when the
    payload does not say (older ECR events). `pushed_at` is seconds since the epoch (UTC).
    """

    source: str
    repository: str
    digest: str
    tag: str | None
    media_type: str | None
    pushed_at: float | None
    event_id: str
    references: tuple[str, ...] = ()
    # The sender's User-Agent as the registry reports it (distribution's request.useragent).
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class TagPush:
    """A tag was pushed at `source` and the sender did not say (or cannot vouch for) the
    digest: Quay, Artifactory. The daemon resolves the tag with a HEAD at the source."""

    source: str
    repository: str
    tag: str
    pushed_at: float | None
    event_id: str
    format: str


@dataclass(frozen=True, slots=True)
class DeleteEvent:
    """A manifest (by digest) or a tag was deleted at `source`; at least one of the two is set.

    Distribution sends a digest-only delete for a manifest and also for a blob (the two are
    indistinguishable in the payload); deleting a manifest by a blob's digest at a destination
    finds nothing, so the ambiguity is harmless.
    """

    source: str
    repository: str
    digest: str | None
    tag: str | None
    event_id: str
    deleted_at: float | None = None
    # The sender's User-Agent as the registry reports it (distribution's request.useragent).
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event we acknowledge and skip (blob push, mount, pull...), with the reason."""

    reason: IgnoreReason
    event_id: str | None = None


ParsedEvent = PushEvent | TagPush | DeleteEvent | Ignored
