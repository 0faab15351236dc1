"""Drift audit: every source tag the rules select, against every destination the policy admits.

For each (tag, destination) the tag must resolve to the source's digest, and the manifest tree
under it must be whole at the destination: every child manifest readable and every blob
present (HEAD). With delete replication on, a destination tag the source lacks is drift too.
Reads only: catalog and tag lists, manifest HEAD/GET, blob HEAD; each digest is checked once
per destination repository however many tags share it. Decisions are in `domain.routing.scan`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from replicator.config.loading import Config
from replicator.config.sites import registry_client
from replicator.domain.images.manifests import Manifest
from replicator.domain.images.media import is_foreign_layer
from replicator.domain.routing import Site, admit_replication
from replicator.domain.routing.scan import Drift, deletes_reach, extra_tags, tag_drift, targets
from replicator.engine.gather import Once, for_each_repository, gather_all
from replicator.engine.tree import MAX_TREE_DEPTH
from replicator.errors import NotFoundError, ReplicatorError
from replicator.logs import get_logger
from replicator.registry import blobs, manifests, tags
from replicator.registry.client import RegistryClient
from replicator.registry.pool import ClientPool
from replicator.scan.repositories import repository_names
from replicator.scan.scanning import source_tags, sources_of

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DriftItem:
    """One thing wrong at a destination."""

    source: str
    destination: str
    repository: str
    tag: str | None
    drift: Drift
    detail: str


@dataclass(slots=True)
class VerifyReport:
    """The audit's findings and what it looked at."""

    items: list[DriftItem] = field(default_factory=list)
    repositories: int = 0
    tags_checked: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """No drift found and every repository could be read."""
        return not self.items and not self.errors


class Verifier:
    """Audits the sources of one config (one source, or every registry with rules)."""

    def __init__(
        self,
        config: Config,
        sites: Mapping[str, Site],
        pool: ClientPool,
        *,
        source: str | None,
        repositories: tuple[str, ...] | None = None,
    ) -> None:
        self._config = config
        self._sites = sites
        self._pool = pool
        self._source = source
        self._repositories = repositories
        self.report = VerifyReport()
        # (destination, repository, digest) -> what is missing under it, so tags sharing an
        # image (and images sharing blobs) cost one check.
        self._trees: Once[tuple[str, str, str], list[tuple[Drift, str]]] = Once()
        self._blobs: Once[tuple[str, str, str], int | None] = Once()

    async def run(self) -> VerifyReport:
        """Audit everything; a repository that cannot be read is an error, not drift."""
        for source in sources_of(self._config, self._sites, self._source):
            client = registry_client(self._pool, self._config, source.name)

            async def one(repository: str, source: Site = source) -> None:
                try:
                    await self._repository(source, repository)
                except ReplicatorError as exc:
                    self._error(f"{source.name}/{repository}: {exc.code}: {exc}")

            names = repository_names(
                client,
                self._config.registries[source.name],
                chosen=self._repositories,
                on_invalid=self._error,
            )
            try:
                await for_each_repository(names, one)
            except ReplicatorError as exc:
                self._error(f"{source.name}: catalog: {exc.code}: {exc}")
        return self.report

    def _error(self, message: str) -> None:
        self.report.errors.append(message)
        log.warning("verify_error", error=message)

    def _add(self, item: DriftItem) -> None:
        self.report.items.append(item)
        log.info("drift", **{k: getattr(item, k) for k in DriftItem.__slots__})

    async def _repository(self, source: Site, repository: str) -> None:
        src = registry_client(self._pool, self._config, source.name)
        found = await source_tags(src, repository, on_invalid=self._error)
        self.report.repositories += 1
        wanted: dict[str, list[tuple[str, str]]] = {}
        for tag, digest in found:
            for target in targets(source, self._sites, repository=repository, tag=tag):
                wanted.setdefault(target.name, []).append((tag, digest))
        source_names = [tag for tag, _ in found]
        await gather_all(
            [
                self._destination(source, self._sites[name], repository, pairs, source_names)
                for name, pairs in wanted.items()
            ]
        )

    async def _destination(
        self,
        source: Site,
        target: Site,
        repository: str,
        pairs: list[tuple[str, str]],
        source_names: list[str],
    ) -> None:
        dst = registry_client(self._pool, self._config, target.name)
        present = await tags.list_tags(dst, repository)
        exists = bool(present)
        decision = admit_replication(source, target, repository, repository_exists=exists)
        if not decision.allowed:
            log.debug("verify_skipped_denied", destination=target.name, reason=decision.reason)
            return
        self.report.tags_checked += len(pairs)

        def item(tag: str | None, drift: Drift, detail: str) -> None:
            self._add(DriftItem(source.name, target.name, repository, tag, drift, detail))

        if not exists:
            item(None, Drift.MISSING_REPOSITORY, f"{len(pairs)} tag(s) expected")
            return
        listed = set(present)
        heads = await gather_all(
            [
                manifests.head(dst, repository, tag) if tag in listed else _absent()
                for tag, _ in pairs
            ]
        )
        intact: list[tuple[str, str]] = []
        for (tag, digest), head in zip(pairs, heads, strict=True):
            found = head.digest if head is not None else None
            drift = tag_drift(source_digest=digest, dest_digest=found, repository_exists=True)
            if drift is None:
                intact.append((tag, digest))
            else:
                item(tag, drift, f"source {digest}, destination {found or 'none'}")
        missing = await gather_all([self._tree(dst, target.name, repository, d) for _, d in intact])
        for (tag, _), problems in zip(intact, missing, strict=True):
            for drift, detail in problems:
                item(tag, drift, detail)
        for tag in extra_tags(source_names, present):
            if deletes_reach(source, target, repository=repository, tag=tag):
                item(tag, Drift.EXTRA_TAG, "not at the source (delete replication is on)")

    def _tree(
        self, dst: RegistryClient, name: str, repository: str, digest: str
    ) -> asyncio.Future[list[tuple[Drift, str]]]:
        return self._trees(
            (name, repository, digest), lambda: self._check_tree(dst, name, repository, digest)
        )

    async def _check_tree(
        self, dst: RegistryClient, name: str, repository: str, digest: str
    ) -> list[tuple[Drift, str]]:
        """What is missing under the manifest `digest` at the destination (depth-bounded)."""
        # Foreign layers are copied there only when its config says so (domain/transfers/plan.py).
        foreign = self._config.registries[name].allow_nondistributable_artifacts
        problems: list[tuple[Drift, str]] = []
        level = [digest]
        for _depth in range(MAX_TREE_DEPTH):
            fetched = await gather_all([self._manifest(dst, repository, d) for d in level])
            level = []
            blob_checks: list[tuple[str, asyncio.Future[int | None]]] = []
            for manifest in fetched:
                if isinstance(manifest, str):
                    problems.append((Drift.MISSING_MANIFEST, manifest))
                    continue
                level.extend(child.digest for child in manifest.children)
                for blob in manifest.blobs:
                    if is_foreign_layer(blob.media_type) and not foreign:
                        continue  # never copied there: not drift
                    blob_checks.append(
                        (blob.digest, self._blob(dst, name, repository, blob.digest))
                    )
            sizes = await gather_all([task for _, task in blob_checks])
            problems.extend(
                (Drift.MISSING_BLOB, f"blob {blob} of {digest}")
                for (blob, _), size in zip(blob_checks, sizes, strict=True)
                if size is None
            )
            if not level:
                break
        return problems

    async def _manifest(self, dst: RegistryClient, repository: str, digest: str) -> Manifest | str:
        """The destination's manifest, or a description of it missing."""
        try:
            return await manifests.get(dst, repository, digest)
        except NotFoundError:
            return f"manifest {digest}"

    def _blob(
        self, dst: RegistryClient, name: str, repository: str, digest: str
    ) -> asyncio.Future[int | None]:
        return self._blobs((name, repository, digest), lambda: blobs.head(dst, repository, digest))


async def _absent() -> None:
    return None


async def run_verify(
    config: Config, *, source: str | None, repositories: tuple[str, ...] | None = None
) -> VerifyReport:
    """Audit the sources of `config` (one, or all with rules); `repositories` instead of each
    source's list or catalog."""
    from replicator.config.sites import sites_of

    async with ClientPool.sized_for(config.workers.concurrency) as pool:
        verifier = Verifier(
            config, sites_of(config), pool, source=source, repositories=repositories
        )
        return await verifier.run()
