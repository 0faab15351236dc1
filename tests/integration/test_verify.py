"""`replicator verify` against real registries: clean after a backfill, and drift made by hand
found with the right category."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_backfill import World, build_world
from tests.support import skopeo
from tests.support.daemon import EUW1, USE1, USW2, replicator_cli
from tests.support.images import LayerSpec
from tests.support.registry_fixtures import RegistryFactory

pytestmark = pytest.mark.integration


def verify(world: World) -> tuple[int, dict[str, Any]]:
    """Exit code and JSON report of `replicator verify --json`."""
    result = replicator_cli(world.config, "verify", "--json")
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert (report["schema"], report["command"]) == (1, "verify")  # README "JSON output"
    return result.returncode, report


def drifts(report: dict[str, Any]) -> set[tuple[str, str, str | None, str]]:
    """(destination, repository, tag, category) of every drift reported."""
    return {(d["destination"], d["repository"], d["tag"], d["drift"]) for d in report["drift"]}


def delete(url: str) -> None:
    """DELETE a manifest or blob by URL; the registry must accept it."""
    assert httpx.delete(url).status_code == 202, url


def push_other(world: World, destination: str, repository: str, tag: str, seed: int) -> None:
    """Push a different image straight to a destination as repository:tag."""
    name = f"other-{seed}"
    world.layout.image(name, [LayerSpec(seed=seed, size=1024)])
    host = world.registries[destination].host
    skopeo.push_layout(world.layout.path, name, f"{host}/{repository}:{tag}")


def cleanup(world: World) -> None:
    """Stop the world's registries."""
    for registry in world.registries.values():
        registry.cleanup()


class TestVerify:
    def test_clean_after_backfill_then_drift_by_hand(
        self, tmp_path: Path, registry_factory: RegistryFactory
    ) -> None:
        """Clean after backfill; then a deleted blob, a deleted manifest, a tag moved at the
        destination and a repository emptied are each reported in their category."""
        world = build_world(tmp_path, registry_factory)
        try:
            assert world.backfill()["exit"] == 0
            code, report = verify(world)
            assert (code, report["drift"], report["errors"]) == (0, [], [])
            assert report["tags_checked"] == 7
            usw2, euw1 = world.registries[USW2].url, world.registries[EUW1].url
            app_v1 = world.images[("prod/app", "v1")]
            delete(f"{usw2}/v2/prod/app/blobs/{app_v1.layer_digests[0]}")
            delete(f"{usw2}/v2/prod/web/manifests/{world.images[('prod/web', '1.0')].digest}")
            push_other(world, USW2, "dev/tool", "1", seed=90)
            delete(f"{euw1}/v2/prod/app/manifests/{app_v1.digest}")
            delete(f"{euw1}/v2/prod/app/manifests/{world.images[('prod/app', 'v2')].digest}")
            code, report = verify(world)
            assert code == 1
            assert drifts(report) == {
                (USW2, "prod/app", "v1", "missing_blob"),
                (USW2, "prod/web", None, "missing_repository"),
                (USW2, "dev/tool", "1", "different_digest"),
                (EUW1, "prod/app", None, "missing_repository"),
            }
            blob = next(d for d in report["drift"] if d["drift"] == "missing_blob")
            assert app_v1.layer_digests[0] in blob["detail"]
            assert all(d["source"] == USE1 for d in report["drift"])
        finally:
            cleanup(world)

    def test_missing_tag_and_table_output(
        self, tmp_path: Path, registry_factory: RegistryFactory
    ) -> None:
        """A tag deleted beside another is missing_tag; the table names it and exits 1."""
        world = build_world(tmp_path, registry_factory)
        try:
            assert world.backfill()["exit"] == 0
            usw2 = world.registries[USW2].url
            delete(f"{usw2}/v2/prod/app/manifests/{world.images[('prod/app', 'v2')].digest}")
            result = replicator_cli(world.config, "verify")
            assert result.returncode == 1, result.stderr
            assert "missing_tag" in result.stdout
            assert "prod/app" in result.stdout
            assert "1 drift(s)" in result.stdout
        finally:
            cleanup(world)

    @pytest.mark.parametrize("delete_replication", [True, False], ids=["on", "off"])
    def test_extra_tag_only_with_delete_replication(
        self, tmp_path: Path, registry_factory: RegistryFactory, delete_replication: bool
    ) -> None:
        """A destination tag the source lacks is drift only where deleteReplication is on."""
        world = build_world(tmp_path, registry_factory, delete_replication=delete_replication)
        try:
            assert world.backfill()["exit"] == 0
            push_other(world, USW2, "prod/app", "stray", seed=91)
            code, report = verify(world)
            if delete_replication:
                assert code == 1
                assert drifts(report) == {(USW2, "prod/app", "stray", "extra_tag")}
            else:
                assert (code, report["drift"]) == (0, [])
        finally:
            cleanup(world)
