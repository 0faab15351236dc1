"""Referrers at a destination without the referrers API: the fallback tag index kept listing
them (domain/images/referrers.py decides the merged index; this module reads and writes it)."""

from __future__ import annotations

import asyncio
from typing import Any

from replicator.domain.images.manifests import Descriptor, Manifest, parse_manifest
from replicator.domain.images.referrers import (
    fallback_tag,
    listed_entry,
    merge_referrers,
    referrer_entry,
)
from replicator.errors import ManifestError, NotFoundError
from replicator.logs import get_logger
from replicator.registry import manifests, referrers
from replicator.registry.client import RegistryClient

log = get_logger(__name__)


class ReferrerIndex:
    """Adds copied referrers to their subject's `sha256-<hex>` index where the registry has no
    referrers API (distribution 2.8): clients such as oras and cosign find them there.

    Each merge is a read-modify-write of one tag, serialised per tag in this process; processes
    of a fleet writing the same subject's index at the same instant can still lose an entry
    (the registry offers no conditional PUT to prevent it)."""

    def __init__(self) -> None:
        # (destination host, repository, tag) -> its lock and how many tasks hold or wait on
        # it, so a lock lives only while in use.
        self._locks: dict[tuple[str, str, str], tuple[asyncio.Lock, int]] = {}

    async def add(self, client: RegistryClient, repository: str, referrer: Manifest) -> None:
        """List `referrer` in its subject's fallback index in `repository` at the registry of
        `client`, if that registry needs one."""
        assert referrer.subject is not None
        await self._add(client, repository, referrer.subject.digest, [referrer_entry(referrer)])

    async def add_listed(
        self, client: RegistryClient, repository: str, subject: str, listed: list[Descriptor]
    ) -> None:
        """List the referrers a source's referrers API named for `subject` (a sweep: repairs
        an entry missing for a referrer copied before, or lost to a concurrent writer)."""
        if listed:
            await self._add(client, repository, subject, [listed_entry(d) for d in listed])

    async def _add(
        self, client: RegistryClient, repository: str, subject: str, entries: list[dict[str, Any]]
    ) -> None:
        if await referrers.list_referrers(client, repository, subject) is not None:
            return  # the registry answers the referrers API itself
        tag = fallback_tag(subject)
        key = (client.host, repository, tag)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                await self._merge(client, repository, tag, entries)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _merge(
        self, client: RegistryClient, repository: str, tag: str, entries: list[dict[str, Any]]
    ) -> None:
        current = await _manifest_or_none(client, repository, tag)
        merged = merge_referrers(current.raw if current is not None else None, entries)
        if merged is None:
            return
        index = parse_manifest(merged)
        await manifests.put(client, repository, tag, index)
        log.info(
            "referrers_index_updated",
            destination=f"{client.host}/{repository}",
            tag=tag,
            listed=len(index.children),
        )


async def _manifest_or_none(
    client: RegistryClient, repository: str, reference: str
) -> Manifest | None:
    try:
        return await manifests.get(client, repository, reference)
    except NotFoundError:
        return None
    except ManifestError as exc:
        # Something that is no manifest sits at the referrers tag: it cannot be a referrers
        # index, and the merge replaces it with one.
        log.warning("referrers_tag_replaced", host=client.host, tag=reference, error=str(exc))
        return None
