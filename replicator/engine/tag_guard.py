"""The source's tag, asked again before a copy sets it: a newer push must never be undone.

Events arrive late or out of order (a rollback A -> B -> A in quick succession, a redelivery):
a copy about to point a tag at its digest first reads what the source's tag names now, and
domain/jobs/freshness.py decides whether the tag may still be set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from replicator.domain.jobs.freshness import Verdict, check_tag, check_vanished, keep_untagged
from replicator.logs import get_logger
from replicator.registry import manifests
from replicator.registry.client import RegistryClient
from replicator.registry.manifests import ManifestHead

log = get_logger(__name__)
# How often a source tag missing right after its push event is asked again: a tenth of a
# second is a HEAD per poll, and the link usually appears within a poll or two.
TAG_LINK_POLL_SECONDS = 0.1


def overtaken(
    image: str, tag: str, digest: str, source_digest: str | None, *, deletes_follow: bool = False
) -> str | None:
    """Why `tag` of `image` must not be pointed at `digest`, the source's tag naming
    `source_digest` now (None: no such tag; `deletes_follow`: its delete is replicated); None
    when it may."""
    freshness = check_tag(
        image=image, tag=tag, digest=digest, source_digest=source_digest,
        deletes_follow=deletes_follow,
    )  # fmt: skip
    if freshness.verdict is Verdict.PROCEED:
        return None
    log.info("tag_moved_at_source", tag=tag, digest=digest, now=source_digest)
    return freshness.reason


async def settled(
    head: Callable[[], Awaitable[ManifestHead | None]], *, until: float
) -> ManifestHead | None:
    """`head()` of a source tag; while it answers "no such tag" before `until` (the event
    loop's time), asked again every TAG_LINK_POLL_SECONDS: a push's event comes before its tag
    is linked (domain.jobs.freshness.TAG_LINK_GRACE_SECONDS)."""
    loop = asyncio.get_running_loop()
    found = await head()
    while found is None and (left := until - loop.time()) > 0:
        await asyncio.sleep(min(TAG_LINK_POLL_SECONDS, left))
        found = await head()
    return found


async def tag_overtaken(
    head: Callable[[], Awaitable[ManifestHead | None]],
    image: str,
    tag: str,
    digest: str,
    *,
    deletes_follow: bool,
    until: float,
) -> str | None:
    """`overtaken`, the source's tag read by `head()` (`settled` until `until`)."""
    now = await settled(head, until=until)
    return overtaken(image, tag, digest, now.digest if now else None, deletes_follow=deletes_follow)


async def recheck(
    client: RegistryClient,
    repository: str,
    tag: str,
    digest: str,
    *,
    deletes_follow: bool,
    until: float = 0.0,
) -> str | None:
    """`overtaken`, asking the source now: a HEAD of its own, never a shared read of a moment
    ago (a missing tag asked again until `until`, `settled`). One round trip remains between
    this answer and the tag PUT that follows it."""
    now = await settled(lambda: manifests.head(client, repository, tag), until=until)
    image = f"{client.host}/{repository}"
    found = now.digest if now is not None else None
    return overtaken(image, tag, digest, found, deletes_follow=deletes_follow)


async def deleted_at_source(client: RegistryClient, repository: str, digest: str) -> str | None:
    """Why a job whose tag was deleted at the source (its delete replicated) must not put its
    image by digest either: the source no longer serves the image itself (`keep_untagged`);
    None when it may."""
    now = await manifests.head(client, repository, digest)
    if keep_untagged(deletes_follow=True, source_has_digest=now is not None):
        return None
    log.info("image_deleted_at_source", digest=digest)
    return (
        f"{client.host}/{repository}@{digest} was deleted at the source after this push and "
        "deletes are replicated: nothing was copied"
    )


async def vanished(client: RegistryClient, repository: str, digest: str) -> str | None:
    """Why a copy that found its image missing at the source is overtaken rather than failed:
    the source no longer serves `digest` (`check_vanished`); None when it still does."""
    now = await manifests.head(client, repository, digest)
    verdict = check_vanished(
        image=f"{client.host}/{repository}", digest=digest, source_has_digest=now is not None
    )
    if verdict.verdict is Verdict.PROCEED:
        return None
    log.info("image_vanished_at_source", digest=digest)
    return verdict.reason
