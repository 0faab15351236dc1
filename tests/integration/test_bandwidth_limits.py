"""A registry's bandwidth limit in one process: blob bodies wait for it, small requests do not."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator

import pytest

from replicator.registry import blob_reads, blobs, manifests
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
# A limit slow enough that the upload is still going while the HEADs are asked.
LIMIT = 2 * MIB
BLOB = os.urandom(4 * MIB)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
# HEADs asked while the limited upload runs, and how long each may take: a HEAD on loopback
# answers in milliseconds, a loaded machine in tens; one queued behind the limit would wait
# for the upload's remaining ~1.5 s.
HEADS = 5
HEAD_SECONDS = 0.5


async def _chunks() -> AsyncIterator[bytes]:
    for start in range(0, len(BLOB), 64 * 1024):
        yield BLOB[start : start + 64 * 1024]


async def test_small_requests_pass_a_limited_upload(dst_registry: Registry) -> None:
    """While a 4 MiB upload runs at 2 MiB/s, manifest HEADs to the same registry are each
    answered within HEAD_SECONDS, and the upload takes what the limit says."""
    async with ClientPool() as pool:
        client = pool.client(RegistrySettings(host=dst_registry.host, max_bandwidth=LIMIT))
        started = time.monotonic()
        upload = asyncio.create_task(
            blobs.upload(
                client, "team/big", DIGEST, len(BLOB), blobs.verified(_chunks(), DIGEST, len(BLOB))
            )
        )
        took = []
        await asyncio.sleep(0.3)
        for _ in range(HEADS):
            asked = time.monotonic()
            assert await manifests.head(client, "team/big", "v1") is None
            took.append(time.monotonic() - asked)
        assert not upload.done(), "the upload ended before the HEADs: the limit did not hold"
        await upload
        seconds = time.monotonic() - started
    assert max(took) < HEAD_SECONDS, took
    # The bucket's quarter second of burst comes free; the rest at the limit.
    assert seconds >= (len(BLOB) - LIMIT * 0.25) / LIMIT * 0.95
    assert dst_registry.has_blob(DIGEST)


async def test_a_limited_source_is_read_at_its_limit(src_registry: Registry) -> None:
    """A source with a limit is read at it: 4 MiB at 2 MiB/s takes about 1.9 s or more."""
    async with ClientPool() as pool:
        plain = pool.client(RegistrySettings(host=src_registry.host))
        await blobs.upload(plain, "team/big", DIGEST, len(BLOB), _chunks())
    async with ClientPool() as pool:
        client = pool.client(RegistrySettings(host=src_registry.host, max_bandwidth=LIMIT))
        started = time.monotonic()
        async with blob_reads.open_blob(client, "team/big", DIGEST, len(BLOB)) as chunks:
            body = b"".join([chunk async for chunk in blobs.verified(chunks, DIGEST, len(BLOB))])
        seconds = time.monotonic() - started
    assert body == BLOB
    assert seconds >= (len(BLOB) - LIMIT * 0.25) / LIMIT * 0.95
