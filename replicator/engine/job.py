"""One job, end to end: gather the policy facts, decide, then copy or delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from replicator.config.loading import Config
from replicator.config.sites import registry_client
from replicator.domain.events.echoes import WriteAction
from replicator.domain.jobs import JobKind
from replicator.domain.jobs.deletes import (
    DeleteAction,
    Deletion,
    plan_delete,
    plan_untag_unsupported,
)
from replicator.domain.jobs.freshness import Verdict, absent_tag_grace, check_delete
from replicator.domain.routing import Site, admit_replication, existence_matters
from replicator.domain.routing.scan import deletes_reach
from replicator.engine.copier import Copier, CopyResult, CopyStats
from replicator.engine.endpoint import AnnounceWrites, Endpoint
from replicator.engine.kept_uploads import KeptUploads
from replicator.engine.tag_guard import vanished
from replicator.errors import DeleteRefused, NotFoundError, PolicyDenied, RegistryError
from replicator.logs import get_logger
from replicator.registry import manifests, tags
from replicator.registry.pool import ClientPool

if TYPE_CHECKING:
    from replicator.journal.models import JobRow

log = get_logger(__name__)
# Answers of a registry without tag deletion to `DELETE /manifests/<tag>`: distribution 2.8
# says 400 DIGEST_INVALID, others 405 UNSUPPORTED.
TAG_DELETE_UNSUPPORTED = (400, 405)


def job_endpoints(
    row: JobRow,
    pool: ClientPool,
    config: Config,
    announce: AnnounceWrites | None = None,
    uploads: KeptUploads | None = None,
) -> tuple[Endpoint, Endpoint]:
    """The job's repository at its source and at its destination, through the pooled clients;
    `announce` is told of the writes the job makes at the destination, `uploads` keeps its
    blob uploads under way there."""
    target = config.registries[row.destination]
    return (
        Endpoint(registry_client(pool, config, row.source), row.repository),
        Endpoint(
            registry_client(pool, config, row.destination),
            row.repository,
            announce,
            uploads,
            foreign_layers=target.allow_nondistributable_artifacts,
            # ECR: pushing creates no repository; its API does (registry/tags.py).
            creates_repositories=target.auth == "ecr",
        ),
    )


async def run_job(
    row: JobRow, *, copier: Copier, src: Endpoint, dst: Endpoint, source: Site, target: Site
) -> CopyResult:
    """Run a claimed job; raises the typed error that decides between retry and FAILED."""
    if row.kind is JobKind.DELETE:
        return await _replicate_delete(row, src, dst)
    await _admit(row, dst, source, target)
    # eager: fetch the source manifest while asking the destination, and leave the tag alone
    # if it has moved on at the source since this push (the newer push's job sets it).
    # Referrers (signatures, SBOMs): a job from a push event leaves them to their own events,
    # since every referrer push, tagged or not, emits one; sweeping them here would list every
    # tag of the repository on every push. A job from a scan (backfill, reconcile: no push
    # time) sweeps them, as a scan sees no untagged referrer.
    # A tag deleted at the source since its push is not set where that delete is replicated.
    # A push's tag may not be linked at the source yet when its event comes (absent_tag_grace);
    # a scan's job puts nothing once its tag moved (untagged_copy).
    follow = row.tag is not None and deletes_reach(
        source, target, repository=row.repository, tag=row.tag
    )
    from_push = row.pushed_at is not None
    since_event = (datetime.now(UTC) - row.created_at).total_seconds()
    try:
        return await copier.copy_image(
            src, row.digest, dst, tag=row.tag or None, eager=True,
            with_referrers=not from_push, deletes_follow=follow, from_push=from_push,
            absent_grace=absent_tag_grace(from_push=from_push, since_event=since_event),
        )  # fmt: skip
    except NotFoundError:
        # The image deleted at the source before it could be read: overtaken, not failed.
        gone = await vanished(src.client, src.repository, row.digest)
        if gone is None:
            raise
        return CopyResult(row.digest, CopyStats(), superseded=gone)


async def _replicate_delete(row: JobRow, src: Endpoint, dst: Endpoint) -> CopyResult:
    """Delete at the destination what the source confirms gone (404 for the tag, or for the
    digest of a manifest delete); refuse a delete of what it still serves (DeleteRefused:
    forged, or replayed), and leave a tag pushed again since to the re-push's job."""
    reference = row.tag or row.digest
    if not reference:
        return CopyResult(row.digest, await _delete(row, dst))  # refused there: names nothing
    now = await manifests.head(src.client, src.repository, reference)
    freshness = check_delete(
        image=f"{row.source}/{row.repository}",
        digest=row.digest or None,
        tag=row.tag,
        source_digest=now.digest if now is not None else None,
    )
    if freshness.verdict is Verdict.REFUSED:
        log.warning("delete_refused", reason=freshness.reason)
        raise DeleteRefused(freshness.reason)
    if freshness.verdict is Verdict.SUPERSEDED:
        return CopyResult(row.digest, CopyStats(), superseded=freshness.reason)
    return CopyResult(row.digest, await _delete(row, dst))


async def _admit(row: JobRow, dst: Endpoint, source: Site, target: Site) -> None:
    """Check the destination's policy; create the repository where pushing does not (ECR).

    ecr:CreateRepository is needed only when the repository is new at the destination: the
    destination is asked whether it exists only when the policy's answer depends on it, or
    when a missing repository must be created (ECR: as ECR replication does, if allowed)."""
    creates = dst.creates_repositories
    exists = (
        creates or existence_matters(source, target, row.repository)
    ) and await tags.repository_exists(dst.client, dst.repository)
    if source.account != target.account:
        decision = admit_replication(source, target, row.repository, repository_exists=exists)
        if not decision.allowed:
            raise PolicyDenied(decision.reason)
    if creates and not exists:
        await tags.ensure_repository(dst.client, dst.repository)


async def _delete(row: JobRow, dst: Endpoint) -> CopyStats:
    """Delete at the destination what was deleted at the source (domain/jobs/deletes.py decides);
    gone already is success."""
    tagged = None
    if row.tag:
        head = await manifests.head(dst.client, dst.repository, row.tag)
        tagged = head.digest if head is not None else None
    deletion = plan_delete(digest=row.digest, tag=row.tag, tagged=tagged)
    if deletion.action is DeleteAction.TAG and row.tag and tagged:
        try:
            return await _act(deletion, dst, tagged=tagged)
        except RegistryError as exc:
            if exc.temporary or exc.status not in TAG_DELETE_UNSUPPORTED:
                raise
        names = await tags.list_tags(dst.client, dst.repository)
        others = [name for name in names if name != row.tag]
        heads = [await manifests.head(dst.client, dst.repository, t) for t in others]
        deletion = plan_untag_unsupported(
            tag=row.tag,
            tagged=tagged,
            others={t: h.digest if h else None for t, h in zip(others, heads, strict=True)},
        )
    return await _act(deletion, dst)


async def _act(deletion: Deletion, dst: Endpoint, *, tagged: str | None = None) -> CopyStats:
    """Do the delete decided (`tagged`: the digest a tag being deleted names there)."""
    if deletion.action is DeleteAction.SKIP:
        log.info("delete_tag_skipped", reason=deletion.reason)
        return CopyStats()
    if deletion.action is DeleteAction.REFUSE:
        raise RegistryError(f"{dst}: {deletion.reason}", temporary=False)
    if deletion.action is DeleteAction.TAG:
        await dst.writing(WriteAction.DELETE, [(tagged or "", deletion.reference)])
    else:
        await dst.writing(WriteAction.DELETE, [(deletion.reference, None)])
    await manifests.delete(dst.client, dst.repository, deletion.reference)
    return CopyStats(images=1)
