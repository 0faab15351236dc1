"""The source's tag, asked again before a copy sets it: a newer push must never be undone.

Events arrive late or out of order (a rollback A -> B -> A in quick succession, a redelivery):
a copy about to point a tag at its digest first reads what the source's tag names now, and
domain/jobs/freshness.py decides whether the tag may still be set.
"""

from __future__ import annotations

from replicator.domain.jobs.freshness import Verdict, check_tag, check_vanished, keep_untagged
from replicator.logs import get_logger
from replicator.registry import manifests
from replicator.registry.client import RegistryClient

log = get_logger(__name__)


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


async def recheck(
    client: RegistryClient, repository: str, tag: str, digest: str, *, deletes_follow: bool
) -> str | None:
    """`overtaken`, asking the source now: a HEAD of its own, never a shared read of a moment
    ago. One round trip remains between this answer and the tag PUT that follows it."""
    now = await manifests.head(client, repository, tag)
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
