"""One job, end to end: gather the policy facts, decide, then copy or delete."""

from __future__ import annotations

from replicator.copier import Copier, CopyStats, Endpoint
from replicator.domain.jobs import JobKind
from replicator.domain.routing import Site, admit_replication
from replicator.errors import PolicyDenied, RegistryError
from replicator.journal.models import JobRow
from replicator.logs import get_logger
from replicator.registry import manifests, tags
from replicator.registry.client import delete_scope

log = get_logger(__name__)


async def run_job(
    row: JobRow, *, copier: Copier, src: Endpoint, dst: Endpoint, source: Site, target: Site
) -> CopyStats:
    """Run a claimed job; raises the typed error that decides between retry and FAILED."""
    if row.kind is JobKind.DELETE:
        return await _delete(row, dst)
    if source.account != target.account:
        # ecr:CreateRepository is needed only when the repository is new at the destination.
        exists = bool(await tags.list_tags(dst.client, dst.repository))
        decision = admit_replication(source, target, row.repository, repository_exists=exists)
        if not decision.allowed:
            raise PolicyDenied(decision.reason)
    tag = row.tag or None
    if tag is not None:
        current = await manifests.head(src.client, src.repository, tag)
        if current is not None and current.digest != row.digest:
            # The tag moved on at the source since this push: copy the pushed digest, but leave
            # the tag to the newer push's job so replication never moves a tag backwards.
            log.info("tag_moved_at_source", tag=tag, now=current.digest)
            tag = None
    _, stats = await copier.copy_image(src, row.digest, dst, tag=tag)
    return stats


async def _delete(row: JobRow, dst: Endpoint) -> CopyStats:
    """Delete the manifest (by digest) or the tag at the destination; gone already is success."""
    reference = row.digest or row.tag
    if not reference:
        raise RegistryError("delete job names neither digest nor tag", temporary=False)
    if row.digest:
        await manifests.delete(dst.client, dst.repository, row.digest)
        return CopyStats(images=1)
    # A tag delete: OCI 1.1 lets a registry delete a tag by name; distribution 2.8 answers
    # 400/405 (UNSUPPORTED) and then the job fails with that answer rather than deleting more.
    await dst.client.request(
        "DELETE",
        f"/v2/{dst.repository}/manifests/{reference}",
        scope=delete_scope(dst.repository),
        expected=(200, 202, 404),
    )
    return CopyStats(images=1)
