"""The CNCF distribution notification envelope `{"events": [...]}` that registry webhooks send,
and the same envelope as the bridge publishes it (events carrying `"format"`).

The source registry is not in the body: it is the name in the topic (see payloads.py).
"""

from __future__ import annotations

from typing import Any

from replicator.domain.events import (
    DeleteEvent,
    Ignored,
    IgnoreReason,
    ParsedEvent,
    PushEvent,
    RejectReason,
    TagPush,
)
from replicator.domain.events.fields import (
    optional_digest,
    optional_str,
    optional_tag,
    required_str,
    valid_digest,
    valid_repository,
)
from replicator.domain.events.timestamps import parse_timestamp
from replicator.domain.images.media import base_type, is_manifest_type
from replicator.errors import EventError

DISTRIBUTION_EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
# distribution 3.x sends v2 (the same envelope); v2.8 and GitLab's fork send v1.
DISTRIBUTION_EVENTS_MEDIA_TYPES = frozenset(
    {DISTRIBUTION_EVENTS_MEDIA_TYPE, "application/vnd.docker.distribution.events.v2+json"}
)

# Longest sender User-Agent kept from an event: real ones are under 200 characters (docker's
# lists its components); only the prefix is compared (domain/events/echoes.py).
MAX_AGENT_CHARS = 256

# Docker schema 1 manifests: distribution still reports their pushes, but they cannot be copied
# digest-preserving (signed JSON) and modern registries refuse them.
_SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)


def distribution_event(event: Any, source: str, index: int) -> ParsedEvent:
    """`events[index]` of an envelope that came on the topic of `source`."""
    where = f"events[{index}]"
    if not isinstance(event, dict):
        raise EventError(f"{where} is not an object", reason=RejectReason.UNSUPPORTED_EVENT)
    action = required_str(event, "action", where)
    event_id = required_str(event, "id", where)
    if action == "pull":
        return Ignored(IgnoreReason.PULL, event_id)
    if action == "mount":
        return Ignored(IgnoreReason.BLOB_MOUNT, event_id)
    if action not in ("push", "delete"):
        return Ignored(IgnoreReason.UNKNOWN_ACTION, event_id)
    target = event.get("target")
    if not isinstance(target, dict):
        raise EventError(f"{where}.target is missing", reason=RejectReason.MISSING_FIELD)
    timestamp = parse_timestamp(event.get("timestamp"))
    agent = _user_agent(event.get("request"))
    if action == "delete":
        repository = valid_repository(required_str(target, "repository", f"{where}.target"))
        digest = optional_digest(target, "digest", f"{where}.target")
        tag = optional_tag(target, "tag", f"{where}.target")
        if digest is None and tag is None:
            # A whole repository was deleted: ECR does not replicate that, and neither do we.
            return Ignored(IgnoreReason.REPOSITORY_DELETE, event_id)
        return DeleteEvent(source, repository, digest, tag, event_id, timestamp, agent)
    # `format` marks an event the bridge normalised from another registry's webhook: those may
    # lack the media type (Harbor, GAR...) and, pushed by tag, the digest (Quay, Artifactory).
    bridged = optional_str(event, "format", where)
    if bridged is not None:
        pushed = TagPush(source, "", "", timestamp, event_id, bridged[:40])
        return _bridged_push(target, pushed, f"{where}.target", agent)
    media_type = required_str(target, "mediaType", f"{where}.target")
    base = base_type(media_type)
    if base in _SCHEMA1_TYPES:
        return Ignored(IgnoreReason.UNSUPPORTED_MEDIA_TYPE, event_id)
    if not is_manifest_type(media_type):
        # Distribution reports every layer and config upload as a push of the blob's type.
        return Ignored(IgnoreReason.BLOB_PUSH, event_id)
    repository = valid_repository(required_str(target, "repository", f"{where}.target"))
    digest = valid_digest(required_str(target, "digest", f"{where}.target"))
    tag = optional_tag(target, "tag", f"{where}.target")
    references = _child_manifests(target.get("references"), f"{where}.target.references")
    return PushEvent(source, repository, digest, tag, base, timestamp, event_id, references, agent)


def _user_agent(request: Any) -> str | None:
    """`request.useragent` of an event, cut to MAX_AGENT_CHARS; None when absent or not text."""
    if not isinstance(request, dict):
        return None
    agent = request.get("useragent")
    return agent[:MAX_AGENT_CHARS] if isinstance(agent, str) and agent else None


def _bridged_push(
    target: dict[str, Any], seed: TagPush, where: str, agent: str | None
) -> ParsedEvent:
    """A push the bridge normalised; `seed` and `agent` hold what the event (not its target)
    says."""
    source, event_id, timestamp = seed.source, seed.event_id, seed.pushed_at
    repository = valid_repository(required_str(target, "repository", where))
    tag = optional_tag(target, "tag", where)
    digest = optional_digest(target, "digest", where)
    media_type = optional_str(target, "mediaType", where)
    if media_type is not None and not is_manifest_type(media_type):
        return Ignored(IgnoreReason.UNSUPPORTED_MEDIA_TYPE, event_id)
    if digest is None:
        if tag is None:
            raise EventError(
                f"{where} names neither a digest nor a tag", reason=RejectReason.MISSING_FIELD
            )
        return TagPush(source, repository, tag, timestamp, event_id, seed.format)
    base = None if media_type is None else base_type(media_type)
    return PushEvent(source, repository, digest, tag, base, timestamp, event_id, (), agent)


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
            children.append(
                valid_digest(required_str(descriptor, "digest", f"{where}[{position}]"))
            )
    return tuple(children)
