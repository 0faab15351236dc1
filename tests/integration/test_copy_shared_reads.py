"""One push copied to several destinations reads the source once (SourceReads in the Copier)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from replicator.engine.copier import Copier
from replicator.engine.endpoint import Endpoint
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support import skopeo
from tests.support.images import BuiltImage, LayerSpec, OCILayout
from tests.support.layout_push import LayoutPusher
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

REPOSITORY = "prod/app"
# A GET of a blob or a manifest in a registry's access log, made by replicator.
GET_LINE = re.compile(
    r'"GET /v2/prod/app/(?P<kind>blobs|manifests)/(?P<ref>\S+) HTTP[^"]*" 200 .*"replicator"$'
)


def source_gets(registry: Registry) -> list[tuple[str, str]]:
    """(kind, reference) of every GET replicator made to `registry`."""
    found = []
    for line in registry.log_text().splitlines():
        match = GET_LINE.search(line)
        if match:
            found.append((match["kind"], match["ref"]))
    return found


def push_v1(source: Registry, tmp_path: Path, layers: list[LayerSpec]) -> BuiltImage:
    """Build an image of `layers` and push it to the source as prod/app:v1."""
    layout = OCILayout(tmp_path / "layout")
    image = layout.image("v1", layers)
    pusher = LayoutPusher(layout.path, source.url, REPOSITORY)
    try:
        pusher.push_tag("v1")
    finally:
        pusher.close()
    return image


async def copy_to_all(
    source: Registry, destinations: list[Registry], digest: str, tag: str, copier: Copier
) -> None:
    """A push's jobs: one eager copy per destination, all at once, through one Copier."""
    async with ClientPool() as pool:
        src = Endpoint(pool.client(RegistrySettings(host=source.host)), REPOSITORY)
        await asyncio.gather(*(
            copier.copy_image(
                src, digest, Endpoint(pool.client(RegistrySettings(host=d.host)), REPOSITORY),
                tag=tag, eager=True, with_referrers=False,
            )
            for d in destinations
        ))  # fmt: skip


class TestSharedReads:
    async def test_three_destinations_read_each_blob_once(
        self, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        """Copied to three destinations at once, the image's manifest and each blob are read
        from the source once, and every destination holds the image with the source's digest."""
        source = registry_factory()
        destinations = [registry_factory() for _ in range(3)]
        image = push_v1(source, tmp_path, [LayerSpec(seed, 64 * 1024, False) for seed in (1, 2, 3)])
        await copy_to_all(source, destinations, image.digest, "v1", Copier())
        gets = source_gets(source)
        assert sorted(gets) == sorted(set(gets)), gets
        assert ("manifests", image.digest) in gets
        assert sum(1 for kind, _ in gets if kind == "blobs") == len(image.blob_digests)
        for destination in destinations:
            assert skopeo.digest_of(f"{destination.host}/{REPOSITORY}:v1") == image.digest

    async def test_large_blobs_stream_per_destination(
        self, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        """A blob above the sharing limit is streamed from the source for each destination."""
        source = registry_factory()
        destinations = [registry_factory() for _ in range(2)]
        image = push_v1(source, tmp_path, [LayerSpec(7, 9 * 1024 * 1024, False)])
        await copy_to_all(source, destinations, image.digest, "v1", Copier())
        layer = image.layer_digests[0]
        assert source_gets(source).count(("blobs", layer)) == len(destinations)
        for destination in destinations:
            assert skopeo.digest_of(f"{destination.host}/{REPOSITORY}:v1") == image.digest
