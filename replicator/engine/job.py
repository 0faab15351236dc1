"""One job, end to end: gather the policy facts, decide, then copy or delete."""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.domain.jobs import JobKind
from replicator.domain.routing import Site, admit_replication
from replicator.engine.copier import Copier, CopyResult, CopyStats, Endpoint
from replicator.errors import PolicyDenied, RegistryError
from replicator.logs import get_logger
from replicator.registry import manifests, tags
from replicator.registry.client import delete_scope
from replicator.registry.retry import retried

if TYPE_CHECKING:
    from replicator.journal.models import JobRow

log = get_logger(__name__)
# Answers of a registry without tag deletion to `DELETE /manifests/<tag>`: distribution 2.8
# says 400 DIGEST_INVALID, others 405 UNSUPPORTED.
TAG_DELETE_UNSUPPORTED = (400, 405)


async def run_job(
    row: JobRow, *, copier: Copier, src: Endpoint, dst: Endpoint, source: Site, target: Site
) -> CopyResult:
    """Run a claimed job; raises the typed error that decides between retry and FAILED."""
    if row.kind is JobKind.DELETE:
        return CopyResult(row.digest, await _delete(row, dst))
    if source.account != target.account:
        # ecr:CreateRepository is needed only when the repository is new at the destination:
        # ask the destination (a tags listing) only when the policy does not grant it anyway.
        decision = admit_replication(source, target, row.repository, repository_exists=False)
        if not decision.allowed:
            exists = bool(await retried(tags.list_tags, dst.client, dst.repository))
            decision = admit_replication(source, target, row.repository, repository_exists=exists)
        if not decision.allowed:
            raise PolicyDenied(decision.reason)
    # eager: fetch the source manifest while asking the destination, and leave the tag alone
    # if it has moved on at the source since this push (the newer push's job sets it).
    # Referrers (signatures, SBOMs): a job from a push event leaves them to their own events,
    # since every referrer push, tagged or not, emits one; sweeping them here would list every
    # tag of the repository on every push. A job from a scan (backfill, reconcile: no push
    # time) sweeps them, as a scan sees no untagged referrer.
    return await copier.copy_image(
        src, row.digest, dst, tag=row.tag or None, eager=True,
        with_referrers=row.pushed_at is None,
    )  # fmt: skip


async def _delete(row: JobRow, dst: Endpoint) -> CopyStats:
    """Delete at the destination what was deleted at the source; gone already is success.

    A digest alone deletes that manifest (its tags go with it, as at the source). A tag deletes
    only the tag, never more: not when it now points at another digest than the deleted one (a
    newer push moved it), and on a registry without tag deletion (distribution 2.8 answers 400
    DIGEST_INVALID; the OCI 1.1 `DELETE /manifests/<tag>` is optional) the manifest is deleted
    by digest only if no other tag there points at it, as ECR untags and deletes the last tag.
    """
    if not row.digest and not row.tag:
        raise RegistryError("delete job names neither digest nor tag", temporary=False)
    if not row.tag:
        await retried(manifests.delete, dst.client, dst.repository, row.digest)
        return CopyStats(images=1)
    current = await retried(manifests.head, dst.client, dst.repository, row.tag)
    if current is None or (row.digest and current.digest != row.digest):
        log.info("delete_tag_skipped", now=current.digest if current else None)
        return CopyStats()
    try:
        await retried(
            dst.client.request,
            "DELETE",
            f"/v2/{dst.repository}/manifests/{row.tag}",
            scope=delete_scope(dst.repository),
            expected=(200, 202, 404),
        )
        return CopyStats(images=1)
    except RegistryError as exc:
        if exc.temporary or exc.status not in TAG_DELETE_UNSUPPORTED:
            raise
    others = [t for t in await retried(tags.list_tags, dst.client, dst.repository) if t != row.tag]
    heads = [await retried(manifests.head, dst.client, dst.repository, t) for t in others]
    sharing = [t for t, h in zip(others, heads, strict=True) if h and h.digest == current.digest]
    if sharing:
        raise RegistryError(
            f"{dst}: the registry cannot delete tag {row.tag} alone and {current.digest} is "
            f"also tagged {', '.join(sorted(sharing)[:5])}; left in place",
            temporary=False,
        )
    await retried(manifests.delete, dst.client, dst.repository, current.digest)
    return CopyStats(images=1)
