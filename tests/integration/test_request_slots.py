"""Per-registry request slots: blob transfers and small requests are bounded separately."""

from __future__ import annotations

import asyncio

import pytest

from replicator.registry import manifests
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

# A HEAD on loopback answers in milliseconds; this only bounds a test that would hang.
ANSWER_TIMEOUT_SECONDS = 5.0


async def test_small_request_is_not_kept_waiting_behind_busy_transfer_slots(
    dst_registry: Registry,
) -> None:
    """With the registry's only transfer slot held (a blob being copied), a manifest HEAD to the
    same registry is answered at once rather than queued behind the transfer."""
    async with ClientPool() as pool:
        client = pool.client(RegistrySettings(host=dst_registry.host, max_in_flight=1))
        holding, release = asyncio.Event(), asyncio.Event()

        async def transfer() -> None:
            async with client.slot():
                holding.set()
                await release.wait()

        task = asyncio.create_task(transfer())
        try:
            await holding.wait()
            head = await asyncio.wait_for(
                manifests.head(client, "team/app", "v1"), ANSWER_TIMEOUT_SECONDS
            )
            assert head is None
        finally:
            release.set()
            await task
