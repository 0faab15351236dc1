"""Bus payloads (ARCHITECTURE §5) -> PushEvent / DeleteEvent / Ignored, or EventError.

Two shapes are accepted:

1. the CNCF distribution notification envelope `{"events": [...]}` that registry webhooks send
   (the source registry is the name in the topic `registry/<source-name>/events`);
2. an Amazon EventBridge `ECR Image Action` event, whose `account` and `region` must name the
   configured registry of its topic.

A message's source is its topic, whatever its shape: a publisher the broker lets onto one
source's topic cannot speak for another registry by naming it in the body.

An envelope is all-or-nothing: one invalid event rejects the whole message. Distribution has
already validated names and digests before it notifies, so a bad event means a hand-made or
corrupted message, and rejecting it whole keeps "one message, one journal outcome".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from replicator.domain.media import is_manifest_type
from replicator.domain.refs import validate_digest, validate_repository, validate_tag
from replicator.domain.timestamps import parse_timestamp
from replicator.errors import EventError, InvalidReferenceError

# Distribution envelopes are a few KiB (a tagged 4-layer manifest push is ~2 KiB, one event per
# envelope by default); 1 MiB leaves room for batched envelopes and big indexes while bounding
# the memory and parse time one message can take.
MAX_PAYLOAD_BYTES = 1024 * 1024

DISTRIBUTION_EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
# distribution 3.x sends v2 (the same envelope); v2.8 and GitLab's fork send v1.
DISTRIBUTION_EVENTS_MEDIA_TYPES = frozenset(
    {DISTRIBUTION_EVENTS_MEDIA_TYPE, "application/vnd.docker.distribution.events.v2+json"}
)
ECR_IMAGE_ACTION = "ECR Image Action"
ECR_REPLICATION_ACTION = "ECR Replication Action"
# Outgoing result events keep ECR's `source` so EventBridge-style rules written for ECR match.
ECR_EVENT_SOURCE = "aws.ecr"

# Docker schema 1 manifests: distribution still reports their pushes, but they cannot be copied
# digest-preserving (signed JSON) and modern registries refuse them.
_SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)


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


class ReplicationResult(StrEnum):
    """`detail.result` of an outgoing `ECR Replication Action` event."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


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


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event we acknowledge and skip (blob push, mount, pull...), with the reason."""

    reason: IgnoreReason
    event_id: str | None = None


ParsedEvent = PushEvent | TagPush | DeleteEvent | Ignored
Locate = Callable[[str, str], str | None]


def parse_payload(
    payload: bytes,
    *,
    topic_source: str | None,
    locate: Locate,
    sources: Collection[str] | None = None,
) -> list[ParsedEvent]:
    """Parse one bus message into events; raise EventError with a `RejectReason` when rejected.

    `topic_source` is the source-name position of the topic the message came on, and the
    message's source; `sources`, when given, are the configured registry names it must be one
    of. `locate(account, region)` names the configured registry of an EventBridge event, or
    None; it must be the topic's.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise EventError(
            f"payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}",
            reason=RejectReason.TOO_LARGE,
        )
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and over-long integers;
        # RecursionError is what deeply nested arrays raise.
        raise EventError(
            f"payload is not JSON: {str(exc)[:200]}", reason=RejectReason.INVALID_JSON
        ) from exc
    if not isinstance(document, dict):
        raise EventError(
            f"payload is a JSON {type(document).__name__}, not an object",
            reason=RejectReason.UNSUPPORTED_EVENT,
        )
    if "events" in document:
        source = _topic_source(topic_source, sources)
        events = document["events"]
        if not isinstance(events, list):
            raise EventError(
                "'events' of the envelope is not a list", reason=RejectReason.UNSUPPORTED_EVENT
            )
        return [_distribution_event(event, source, index) for index, event in enumerate(events)]
    if "detail-type" in document:
        return [_eventbridge_event(document, _topic_source(topic_source, sources), locate)]
    raise EventError(
        "payload is neither a distribution envelope ('events') nor an EventBridge event "
        "('detail-type')",
        reason=RejectReason.UNSUPPORTED_EVENT,
    )


def _topic_source(topic_source: str | None, sources: Collection[str] | None) -> str:
    if not topic_source:
        raise EventError(
            "an event must arrive on registry/<source-name>/events",
            reason=RejectReason.UNKNOWN_SOURCE,
        )
    if sources is not None and topic_source not in sources:
        raise EventError(
            f"source {topic_source[:80]!r} is not a configured registry",
            reason=RejectReason.UNKNOWN_SOURCE,
        )
    return topic_source


def _distribution_event(event: Any, source: str, index: int) -> ParsedEvent:
    where = f"events[{index}]"
    if not isinstance(event, dict):
        raise EventError(f"{where} is not an object", reason=RejectReason.UNSUPPORTED_EVENT)
    action = _required_str(event, "action", where)
    event_id = _required_str(event, "id", where)
    if action == "pull":
        return Ignored(IgnoreReason.PULL, event_id)
    if action == "mount":
        return Ignored(IgnoreReason.BLOB_MOUNT, event_id)
    if action not in ("push", "delete"):
        raise EventError(
            f"{where}.action {action[:40]!r} is not push, delete, pull or mount",
            reason=RejectReason.UNSUPPORTED_EVENT,
        )
    target = event.get("target")
    if not isinstance(target, dict):
        raise EventError(f"{where}.target is missing", reason=RejectReason.MISSING_FIELD)
    timestamp = parse_timestamp(event.get("timestamp"))
    if action == "delete":
        repository = _repository(_required_str(target, "repository", f"{where}.target"))
        digest = _optional_digest(target, "digest", f"{where}.target")
        tag = _optional_tag(target, "tag", f"{where}.target")
        if digest is None and tag is None:
            # A whole repository was deleted: ECR does not replicate that, and neither do we.
            return Ignored(IgnoreReason.REPOSITORY_DELETE, event_id)
        return DeleteEvent(source, repository, digest, tag, event_id, timestamp)
    # `format` marks an event the bridge normalised from another registry's webhook: those may
    # lack the media type (Harbor, GAR...) and, pushed by tag, the digest (Quay, Artifactory).
    bridged = _optional_str(event, "format", where)
    if bridged is not None:
        pushed = TagPush(source, "", "", timestamp, event_id, bridged[:40])
        return _bridged_push(target, pushed, f"{where}.target")
    media_type = _required_str(target, "mediaType", f"{where}.target")
    base_type = media_type.split(";", 1)[0].strip()
    if base_type in _SCHEMA1_TYPES:
        return Ignored(IgnoreReason.UNSUPPORTED_MEDIA_TYPE, event_id)
    if not is_manifest_type(media_type):
        # Distribution reports every layer and config upload as a push of the blob's type.
        return Ignored(IgnoreReason.BLOB_PUSH, event_id)
    repository = _repository(_required_str(target, "repository", f"{where}.target"))
    digest = _digest(_required_str(target, "digest", f"{where}.target"))
    tag = _optional_tag(target, "tag", f"{where}.target")
    references = _child_manifests(target.get("references"), f"{where}.target.references")
    return PushEvent(source, repository, digest, tag, base_type, timestamp, event_id, references)


def _bridged_push(target: dict[str, Any], seed: TagPush, where: str) -> ParsedEvent:
    """A push the bridge normalised; `seed` holds what the event (not its target) says."""
    source, event_id, timestamp = seed.source, seed.event_id, seed.pushed_at
    repository = _repository(_required_str(target, "repository", where))
    tag = _optional_tag(target, "tag", where)
    digest = _optional_digest(target, "digest", where)
    media_type = _optional_str(target, "mediaType", where)
    if media_type is not None and not is_manifest_type(media_type):
        return Ignored(IgnoreReason.UNSUPPORTED_MEDIA_TYPE, event_id)
    if digest is None:
        if tag is None:
            raise EventError(
                f"{where} names neither a digest nor a tag", reason=RejectReason.MISSING_FIELD
            )
        return TagPush(source, repository, tag, timestamp, event_id, seed.format)
    base_type = None if media_type is None else media_type.split(";", 1)[0].strip()
    return PushEvent(source, repository, digest, tag, base_type, timestamp, event_id)


def _child_manifests(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise EventError(f"{where} is not a list", reason=RejectReason.MISSING_FIELD)
    children: list[str] = []
    for position, descriptor in enumerate(value):
        if not isinstance(descriptor, dict):
            raise EventError(
                f"{where}[{position}] is not an object", reason=RejectReason.MISSING_FIELD
            )
        media_type = descriptor.get("mediaType")
        if isinstance(media_type, str) and is_manifest_type(media_type):
            children.append(_digest(_required_str(descriptor, "digest", f"{where}[{position}]")))
    return tuple(children)


def _eventbridge_event(document: dict[str, Any], topic_source: str, locate: Locate) -> ParsedEvent:
    detail_type = _required_str(document, "detail-type", "event")
    event_id = _required_str(document, "id", "event")
    if detail_type == ECR_REPLICATION_ACTION:
        # Our own result events (or ECR's) looped back onto the events topic.
        return Ignored(IgnoreReason.REPLICATION_EVENT, event_id)
    if detail_type != ECR_IMAGE_ACTION:
        raise EventError(
            f"EventBridge detail-type {detail_type[:80]!r} is not {ECR_IMAGE_ACTION!r}",
            reason=RejectReason.UNSUPPORTED_EVENT,
        )
    detail = document.get("detail")
    if not isinstance(detail, dict):
        raise EventError("event.detail is missing", reason=RejectReason.MISSING_FIELD)
    action = _required_str(detail, "action-type", "detail")
    if action not in ("PUSH", "DELETE"):
        raise EventError(
            f"detail.action-type {action[:40]!r} is not PUSH or DELETE",
            reason=RejectReason.UNSUPPORTED_EVENT,
        )
    if detail.get("result") != "SUCCESS":
        return Ignored(IgnoreReason.NOT_SUCCESSFUL, event_id)
    account = _required_str(document, "account", "event")
    region = _required_str(document, "region", "event")
    source = locate(account, region)
    if source is None:
        raise EventError(
            f"no configured registry has account {account[:20]!r} and region {region[:40]!r}",
            reason=RejectReason.UNKNOWN_ACCOUNT_REGION,
        )
    if source != topic_source:
        raise EventError(
            f"account {account!r} and region {region!r} name registry {source!r}, but the "
            f"event arrived on the topic of {topic_source!r}: a topic speaks for its own source",
            reason=RejectReason.SOURCE_MISMATCH,
        )
    repository = _repository(_required_str(detail, "repository-name", "detail"))
    tag = _optional_tag(detail, "image-tag", "detail")
    timestamp = parse_timestamp(document.get("time"))
    if action == "DELETE":
        digest = _optional_digest(detail, "image-digest", "detail")
        if digest is None and tag is None:
            raise EventError(
                "a DELETE names neither detail.image-digest nor detail.image-tag",
                reason=RejectReason.MISSING_FIELD,
            )
        return DeleteEvent(source, repository, digest, tag, event_id, timestamp)
    digest = _digest(_required_str(detail, "image-digest", "detail"))
    media_type = _optional_str(detail, "manifest-media-type", "detail")
    if media_type is not None and not is_manifest_type(media_type):
        return Ignored(IgnoreReason.UNSUPPORTED_MEDIA_TYPE, event_id)
    return PushEvent(source, repository, digest, tag, media_type, timestamp, event_id)


def _required_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise EventError(
            f"{where}.{key} is missing or not a non-empty string",
            reason=RejectReason.MISSING_FIELD,
        )
    return value


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EventError(f"{where}.{key} is not a string", reason=RejectReason.MISSING_FIELD)
    return value


def _optional_tag(obj: dict[str, Any], key: str, where: str) -> str | None:
    tag = _optional_str(obj, key, where)
    if tag is None:
        return None
    try:
        return validate_tag(tag)
    except InvalidReferenceError as exc:
        raise EventError(f"{where}.{key}: {exc}", reason=RejectReason.INVALID_TAG) from exc


def _optional_digest(obj: dict[str, Any], key: str, where: str) -> str | None:
    digest = _optional_str(obj, key, where)
    return None if digest is None else _digest(digest)


def _digest(value: str) -> str:
    try:
        return validate_digest(value)
    except InvalidReferenceError as exc:
        raise EventError(str(exc), reason=RejectReason.INVALID_DIGEST) from exc


def _repository(value: str) -> str:
    try:
        return validate_repository(value)
    except InvalidReferenceError as exc:
        raise EventError(str(exc), reason=RejectReason.INVALID_REPOSITORY) from exc


def replication_result_event(
    *,
    event_id: str,
    time: str,
    repository: str,
    digest: str,
    tag: str | None,
    source_account: str,
    source_region: str,
    destination_account: str,
    destination_region: str,
    result: ReplicationResult,
    failure_code: str | None = None,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    """The `ECR Replication Action` event of a finished job, ready for `json.dumps`.

    As ECR does, the event is emitted by the destination (top-level account and region); the
    caller passes a fresh `event_id` and the RFC 3339 `time`, keeping this function pure.
    """
    detail: dict[str, Any] = {
        "result": result.value,
        "repository-name": repository,
        "image-digest": digest,
        "source-account": source_account,
        "source-region": source_region,
        "destination-account": destination_account,
        "destination-region": destination_region,
        "action-type": "REPLICATE",
    }
    if tag is not None:
        detail["image-tag"] = tag
    if result is ReplicationResult.FAILED:
        detail["failure-code"] = failure_code or "UNKNOWN"
        detail["failure-reason"] = failure_reason or ""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": ECR_REPLICATION_ACTION,
        "source": ECR_EVENT_SOURCE,
        "account": destination_account,
        "time": time,
        "region": destination_region,
        "resources": [
            f"arn:aws:ecr:{destination_region}:{destination_account}:repository/{repository}"
        ],
        "detail": detail,
    }
