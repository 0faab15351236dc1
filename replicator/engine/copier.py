"""The copy engine: gathers facts, asks `domain.transfers.plan` what to do, and does it.

One `Copier` serves every copy of a process (the CLI's, the daemon's workers, backfill): it owns
the global transfer limit and the in-flight de-duplication of blobs per destination (its one
`BlobTransfers`, blob_transfers.py), and the memory of which destination repository holds which
blob (for cross-repository mounts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import ParamSpec, TypeVar

from replicator.domain.events.echoes import WriteAction
from replicator.domain.images.manifests import Manifest
from replicator.domain.images.media import ManifestKind
from replicator.domain.images.refs import is_digest
from replicator.domain.jobs.freshness import Untagged, untagged_copy
from replicator.domain.transfers.pace import Floor
from replicator.domain.transfers.plan import (
    CopyPlan,
    DestinationFacts,
    Shortcut,
    plan_copy,
    quick_check,
)
from replicator.engine.blob_locations import BlobLocations
from replicator.engine.blob_transfers import BlobObserver, BlobTransfers
from replicator.engine.copy_stats import CopyFailure, CopyResult, CopyStats, ImageObserver
from replicator.engine.destination_facts import destination_facts, manifest_head
from replicator.engine.endpoint import Endpoint
from replicator.engine.gather import gather_all, task_group
from replicator.engine.paced_reads import PaceObserver
from replicator.engine.referrer_index import ReferrerIndex
from replicator.engine.source_reads import SourceReads
from replicator.engine.tag_guard import deleted_at_source, recheck, tag_overtaken
from replicator.engine.tree import gather_tree
from replicator.errors import NotFoundError, RegistryError, ReplicatorError
from replicator.logs import get_logger
from replicator.registry import blobs, manifests, referrers, tags
from replicator.registry.blobs import DEFAULT_CONCURRENCY

log = get_logger(__name__)
__all__ = ["Copier", "CopyFailure", "CopyResult", "CopyStats"]
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(slots=True)
class _Progress:
    stats: CopyStats = field(default_factory=CopyStats)
    # Set when the source's tag moved on since the job's event: why the tag was left alone.
    superseded: str | None = None
    # The source's delete of the tag is replicated: a tag gone there is not set (tag_guard.py).
    deletes_follow: bool = False
    # What a superseded copy still puts (domain.jobs.freshness.untagged_copy).
    untagged: Untagged = Untagged.DIGEST
    # Until when (loop time) a source tag found missing is asked again (tag_guard.settled).
    absent_until: float = 0.0


class _MemoryContradicted(Exception):
    """A manifest PUT refused MANIFEST_BLOB_UNKNOWN: a blob the plan skipped or mounted is not
    at the destination. The PUT is not repeated as is (`replan_missing_blobs`): `copy_image`
    plans again from the destination's answers instead."""

    def __init__(self, error: RegistryError) -> None:
        super().__init__(str(error))
        self.error = error


async def _put_manifest(dst: Endpoint, reference: str, manifest: Manifest) -> None:
    """PUT a manifest (retried by the client), a refusal for a missing blob raised as
    _MemoryContradicted."""
    try:
        await manifests.put(
            dst.client, dst.repository, reference, manifest, replan_missing_blobs=True
        )
    except RegistryError as exc:
        if manifests.MANIFEST_BLOB_UNKNOWN in exc.error_codes:
            raise _MemoryContradicted(exc) from exc
        raise


class Copier:
    """Copies images between registries; safe to share between concurrent tasks."""

    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        chunk_threshold: int = blobs.DEFAULT_CHUNK_THRESHOLD,
        on_blob: BlobObserver | None = None,
        on_image: ImageObserver | None = None,
        floor: Floor | None = None,
        on_pace: PaceObserver | None = None,
    ) -> None:
        self._on_image = on_image
        self._locations = BlobLocations()
        self._reads = SourceReads()
        self._blobs = BlobTransfers(
            reads=self._reads,
            locations=self._locations,
            concurrency=concurrency,
            chunk_threshold=chunk_threshold,
            on_blob=on_blob,
            floor=floor,
            on_pace=on_pace,
        )
        self._referrer_index = ReferrerIndex()

    @property
    def slow_sources(self) -> list[str]:
        """Source hosts whose blob reads were cut below the floor rate, repeatedly."""
        return self._blobs.slow_sources.slow()

    # -- public operations -------------------------------------------------------------------

    async def copy_image(
        self,
        src: Endpoint,
        reference: str,
        dst: Endpoint,
        *,
        tag: str | None = None,
        with_referrers: bool = True,
        eager: bool = False,
        dest_absent: bool = False,
        deletes_follow: bool = False,
        from_push: bool = True,
        absent_grace: float = 0.0,
    ) -> CopyResult:
        """Copy the image `reference` (tag or digest) of `src` to `dst`, under `tag` if given.

        With `eager` (a job from a fresh push, whose image the destination almost never has),
        the source manifest is fetched while the destination is asked, and when `reference` is
        a digest the source `tag` is checked too, with those requests and again right before
        the tag PUT (see tag_guard.py): if it has moved on to another digest, the image is
        copied untagged and the result says why (`superseded`), so replication never moves a
        tag backwards.

        With `deletes_follow` (the source's deletes of the tag are replicated here), a tag gone
        from the source by then is not set either: its delete is the newer write. A tag found
        missing within `absent_grace` seconds is asked again until then (a push's tag may not be
        linked yet when its event arrives). Unless `from_push`, a copy whose tag may not be set
        puts nothing (domain.jobs.freshness.untagged_copy).

        With `dest_absent` (the destination said the repository does not exist), nothing is
        asked of the destination before the blobs are placed: no manifest or blob is there.

        Returns the digest copied, what was done and the index's children. Raises the typed
        errors: NotFoundError when the source image is missing, DigestMismatch, ManifestError,
        RegistryError.
        """
        progress = _Progress(
            deletes_follow=deletes_follow,
            untagged=untagged_copy(from_push=from_push, deletes_follow=deletes_follow),
            absent_until=asyncio.get_running_loop().time() + absent_grace,
        )
        # `source` and `destination` name registries (the job context); images have their own keys.
        bound = log.bind(source_image=str(src), destination_image=str(dst), reference=reference)
        digest = await self._source_digest(src, reference)
        # The first facts in one round trip: destination digest and tag, and when eager the
        # source manifest and the source tag. A fresh push (eager) is almost never at the
        # destination yet: its tag is asked only once the digest is found there, since a tag
        # cannot point at a digest the registry does not have.
        guard = eager and tag is not None and reference == digest
        async with task_group() as group:

            def head(side: Endpoint, ref: str) -> asyncio.Task[manifests.ManifestHead | None]:
                return group.create_task(manifest_head(side, ref))

            at_digest = None if dest_absent else head(dst, digest)
            at_tag = head(dst, tag) if tag and not eager and not dest_absent else None
            source_tag = (
                group.create_task(
                    tag_overtaken(
                        partial(self._reads.tag_head, src.client, src.repository, tag),
                        str(src),
                        tag,
                        digest,
                        deletes_follow=deletes_follow,
                        until=progress.absent_until,
                    )
                )
                if guard and tag
                else None
            )
            fetched = (
                group.create_task(self._reads.manifest(src.client, src.repository, digest))
                if eager
                else None
            )
        progress.superseded = source_tag.result() if source_tag else None
        if progress.superseded:
            tag, at_tag = None, None
            if progress.untagged is Untagged.NOTHING:
                return CopyResult(digest, progress.stats, superseded=progress.superseded)
        dest_has_digest = at_digest is not None and at_digest.result() is not None
        if tag and at_tag is None and dest_has_digest:
            dest_tag = await manifest_head(dst, tag)
        else:
            dest_tag = at_tag.result() if at_tag else None
        shortcut = quick_check(
            source_digest=digest,
            tag=tag,
            dest_tag_digest=dest_tag.digest if dest_tag else None,
            dest_has_digest=dest_has_digest,
        )
        progress.stats.images = 1
        if shortcut is Shortcut.UP_TO_DATE:
            bound.debug("image_up_to_date", digest=digest)
            return CopyResult(digest, progress.stats)
        root = (
            fetched.result()
            if fetched is not None
            else await self._reads.manifest(src.client, src.repository, digest)
        )
        children: dict[str, Manifest] | None = None
        if shortcut is Shortcut.TAG_ONLY:
            plan = plan_copy(root, {}, DestinationFacts(frozenset({digest})), tag=tag)
            tree = tuple(child.digest for child in root.children)
        else:
            children = await self._gather_tree(src, root)
            plan = await self._plan(root, children, dst, tag, dest_absent=dest_absent)
            tree = tuple(children)
        try:
            await self._execute(plan, src, dst, progress, guard=guard and tag is not None)
        except _MemoryContradicted as contradiction:
            # A blob the plan skipped or mounted is not there: plan again from the destination's
            # own answers, at once (its HEADs drop what this process wrongly believed, see
            # _plan). A second refusal is the registry's error, temporary: the job retries.
            bound.warning("manifest_blob_unknown_replan", error=str(contradiction.error))
            if children is None:
                children = await self._gather_tree(src, root)
            plan = await self._plan(root, children, dst, tag)
            try:
                await self._execute(plan, src, dst, progress, guard=guard and tag is not None)
            except _MemoryContradicted as again:
                raise again.error from None
        bound.info(
            "image_copied",
            digest=digest,
            tag=tag,
            blobs_copied=progress.stats.blobs_copied,
            blobs_mounted=progress.stats.blobs_mounted,
            blobs_skipped=progress.stats.blobs_skipped,
            bytes=progress.stats.bytes_copied,
        )
        if root.subject is not None:
            await self._referrer_index.add(dst.client, dst.repository, root)
        if with_referrers and shortcut is Shortcut.FULL:
            progress.stats.add(await self._copy_referrers(src, dst, root))
        return CopyResult(digest, progress.stats, tree, superseded=progress.superseded)

    async def _source_digest(self, src: Endpoint, reference: str) -> str:
        """The digest `reference` names at the source: itself when it is a digest (no request;
        a missing image then shows at the GET), else a HEAD of the tag."""
        if is_digest(reference):
            return reference
        head = await manifests.head(src.client, src.repository, reference)
        if head is None:
            raise NotFoundError(
                f"source image {src}:{reference} not found: no tag {reference!r} in "
                f"{src.repository} there; check the repository and tag (the registry's tags: "
                f"`skopeo list-tags docker://{src}`)",
                status=404,
            )
        return head.digest

    async def copy_repository(
        self, src: Endpoint, dst: Endpoint, *, tag_filter: Callable[[str], bool] | None = None
    ) -> tuple[CopyStats, list[CopyFailure]]:
        """Copy every tag of `src`, referrer tags after the others; one failure stops no other."""
        # Whether the destination repository exists is asked at once: when it does not, no
        # copy of its first tags need ask the destination for each manifest and blob (at 25 ms
        # away those HEADs were two round trips and half the requests of a cold copy).
        async with task_group() as asking:
            listed = asking.create_task(tags.list_tags(src.client, src.repository))
            absent = asking.create_task(tags.repository_absent(dst.client, dst.repository))
        all_tags, dest_absent = listed.result(), absent.result()
        if not all_tags:
            raise NotFoundError(f"source repository {src} has no tags", status=404)
        chosen = [t for t in all_tags if tag_filter is None or tag_filter(t)]
        # Referrer tags (sha256-<hex>[.sig|.att|.sbom]) go last so their subjects exist first.
        is_referrer = [t.startswith(("sha256-", "sha512-")) for t in chosen]
        total, failures = CopyStats(), []
        if self._on_image is not None:
            self._on_image.plan(len(chosen))
        for group in (
            [t for t, r in zip(chosen, is_referrer, strict=True) if not r],
            [t for t, r in zip(chosen, is_referrer, strict=True) if r],
        ):
            results = await asyncio.gather(
                *(self._counted(src, t, dst, dest_absent=dest_absent) for t in group),
                return_exceptions=True,
            )
            # The referrer tags come after their subjects were placed: asked as usual.
            dest_absent = False
            for tag, result in zip(group, results, strict=True):
                if isinstance(result, ReplicatorError):
                    failures.append(CopyFailure(f"{src}:{tag}", result.code, str(result)))
                elif isinstance(result, BaseException):
                    raise result
                else:
                    total.add(result.stats)
        return total, failures

    async def _counted(
        self, src: Endpoint, tag: str, dst: Endpoint, *, dest_absent: bool
    ) -> CopyResult:
        """copy_image of one tag of a repository copy, told to the image observer."""
        try:
            result = await self.copy_image(
                src, tag, dst, tag=tag, with_referrers=False, dest_absent=dest_absent
            )
        except ReplicatorError:
            if self._on_image is not None:
                self._on_image.image_done(failed=True)
            raise
        if self._on_image is not None:
            self._on_image.image_done()
        return result

    # -- facts --------------------------------------------------------------------------------

    async def _gather_tree(self, src: Endpoint, root: Manifest) -> dict[str, Manifest]:
        """Every descendant manifest of an index (engine/tree.py bounds the walk)."""
        return await gather_tree(self._reads, src.client, src.repository, root, where=str(src))

    async def _plan(
        self,
        root: Manifest,
        children: dict[str, Manifest],
        dst: Endpoint,
        tag: str | None,
        *,
        dest_absent: bool = False,
    ) -> CopyPlan:
        """The plan from what `dst` holds (engine/destination_facts.py)."""
        facts = await destination_facts(
            self._locations, root, children, dst, dest_absent=dest_absent
        )
        return plan_copy(root, children, facts, tag=tag, foreign_layers=dst.foreign_layers)

    # -- acting -------------------------------------------------------------------------------

    async def _execute(
        self, plan: CopyPlan, src: Endpoint, dst: Endpoint, progress: _Progress, *, guard: bool
    ) -> None:
        """Blobs, child manifests, then the root: under the tag, unless `guard` finds the
        source's tag moved on (tag_guard.py), then by digest."""
        await gather_all(self._blobs.ensure(step, src, dst, progress.stats) for step in plan.blobs)
        children = [m for m in plan.manifests if m.digest != plan.root.digest]
        # Every manifest PUT below, announced before the first (the root under its tag).
        await dst.writing(
            WriteAction.PUSH,
            [(m.digest, plan.tag if m.digest == plan.root.digest else None)
             for m in plan.manifests],
        )  # fmt: skip
        # Images before the indexes that list them; all of one kind at once.
        for kind_first in (True, False):
            batch = [m for m in children if (m.kind is not ManifestKind.INDEX) is kind_first]
            await gather_all(_put_manifest(dst, m.digest, m) for m in batch)
            progress.stats.manifests += len(batch)
        if plan.manifests and plan.manifests[-1].digest == plan.root.digest:
            reference = plan.tag or plan.root.digest
            if plan.tag and guard:
                progress.superseded = await recheck(
                    src.client, src.repository, plan.tag, plan.root.digest,
                    deletes_follow=progress.deletes_follow, until=progress.absent_until,
                )  # fmt: skip
                reference = plan.root.digest if progress.superseded else plan.tag
            if progress.superseded and progress.untagged is Untagged.NOTHING:
                return
            if progress.superseded and progress.untagged is Untagged.ASK:
                deleted = await deleted_at_source(src.client, src.repository, plan.root.digest)
                if deleted:  # its delete is the newest write: nothing of it is put
                    progress.superseded = deleted
                    return
            await _put_manifest(dst, reference, plan.root)
            progress.stats.manifests += 1

    async def _copy_referrers(self, src: Endpoint, dst: Endpoint, root: Manifest) -> CopyStats:
        """Copy what refers to `root` (signatures, SBOMs): OCI referrers, else the tag schema."""
        total = CopyStats()
        found = await referrers.list_referrers(src.client, src.repository, root.digest)
        if found is not None:
            for descriptor in found:
                result = await self.copy_image(src, descriptor.digest, dst, with_referrers=False)
                total.add(result.stats)
            await self._referrer_index.add_listed(dst.client, dst.repository, root.digest, found)
        for tag in await referrers.schema_tags(src.client, src.repository, root.digest):
            result = await self.copy_image(src, tag, dst, tag=tag, with_referrers=False)
            total.add(result.stats)
        return total
