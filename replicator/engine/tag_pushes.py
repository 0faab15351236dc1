"""Tag-only pushes (Quay, Artifactory: no digest, or one we cannot vouch for) -> PushEvent, by
reading the tag at the source with a HEAD, as every webhook receiver must (the tag may even
have moved since the event: the digest it has now is the one to replicate). What the answer
makes of the push is domain.events.tag_resolution's to say."""

from __future__ import annotations

from replicator.config.loading import Config
from replicator.config.sites import registry_client
from replicator.domain.events import Ignored, IgnoreReason, PushEvent, TagPush
from replicator.domain.events.tag_resolution import TagHead, resolved_push
from replicator.errors import ConfigError
from replicator.logs import get_logger
from replicator.registry import manifests
from replicator.registry.pool import ClientPool

log = get_logger(__name__)


async def resolve_tag_push(event: TagPush, config: Config, pool: ClientPool) -> PushEvent | Ignored:
    """The push `event` names, with the digest its tag has at the source now; Ignored when the
    tag is gone or names no manifest type we copy. Registry errors propagate (typed)."""
    if event.source not in config.registries:
        raise ConfigError(f"source {event.source!r} is no longer configured")
    client = registry_client(pool, config, event.source)
    head = await manifests.head(client, event.repository, event.tag)
    found = resolved_push(event, None if head is None else TagHead(head.digest, head.media_type))
    if isinstance(found, Ignored):
        if found.reason is IgnoreReason.TAG_NOT_FOUND:
            log.info(
                "event_tag_gone", source=event.source, repository=event.repository, tag=event.tag
            )
        return found
    log.info(
        "event_tag_resolved",
        source=event.source,
        repository=event.repository,
        tag=event.tag,
        digest=found.digest,
        format=event.format,
    )
    return found
