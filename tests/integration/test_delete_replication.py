"""Delete replication against real registries: delete events routed by the rules and policies,
journalled as DELETE jobs and run by the job runner (the daemon's own runner and workers)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from replicator.config.loading import load_config
from replicator.config.sites import sites_of
from replicator.domain.events import DeleteEvent
from replicator.domain.jobs import JobKind, JobState
from replicator.domain.routing import route_delete
from replicator.engine.copier import Copier
from replicator.engine.runner import JobRunner
from replicator.journal.claimers import open_journal
from replicator.journal.models import JobRow
from replicator.registry.pool import ClientPool
from tests.integration.test_backfill import World, build_world
from tests.support import skopeo
from tests.support.daemon import EUW1, USE1, USW2
from tests.support.registry_fixtures import RegistryFactory

pytestmark = pytest.mark.integration


async def replicate_delete(world: World, event: DeleteEvent) -> list[JobRow]:
    """Route the delete, journal its jobs (denied ones FAILED), run them until idle; the jobs."""
    config = load_config(world.config)
    sites = sites_of(config)
    routing = route_delete(event, sites)
    async with await open_journal(config.journal.url) as journal, ClientPool() as pool:
        await journal.add_jobs(
            [r.key for r in routing.routes if r.denied is None],
            denied={r.key: r.denied for r in routing.routes if r.denied is not None},
        )
        runner = JobRunner(
            journal=journal,
            copier=Copier(),
            pool=pool,
            settings=lambda: (config, sites),
        )
        await runner.run(asyncio.Event(), until_idle=True)
        return [r for r in await journal.jobs() if r.kind is JobKind.DELETE]


def tags_at(world: World, destination: str, repository: str) -> list[str]:
    """Tags of a destination repository (skopeo)."""
    return skopeo.list_tags(f"{world.registries[destination].host}/{repository}")


def delete_at_source(world: World, repository: str, digest: str) -> None:
    """Delete a manifest at the source, as a user would."""
    url = f"{world.source.url}/v2/{repository}/manifests/{digest}"
    assert httpx.delete(url).status_code == 202


def event(repository: str, *, digest: str | None = None, tag: str | None = None) -> DeleteEvent:
    """A delete event from the source."""
    return DeleteEvent(USE1, repository, digest, tag, f"test-{repository}-{digest or tag}")


def world_with(tmp_path: Path, registry_factory: RegistryFactory, *, on: bool) -> World:
    """A backfilled world with delete replication on or off."""
    world = build_world(tmp_path, registry_factory, delete_replication=on)
    assert world.backfill()["exit"] == 0
    return world


@pytest.fixture
def cleanup_worlds() -> Iterator[list[World]]:
    """Worlds whose registries are stopped after the test."""
    worlds: list[World] = []
    yield worlds
    for world in worlds:
        for registry in world.registries.values():
            registry.cleanup()


class TestDeleteReplication:
    async def test_manifest_delete_reaches_every_destination_when_on(
        self, tmp_path: Path, registry_factory: RegistryFactory, cleanup_worlds: list[World]
    ) -> None:
        """With deleteReplication on and ecr:BatchDeleteImage allowed, a manifest deleted at the
        source is deleted at both destinations; the other tag stays."""
        world = world_with(tmp_path, registry_factory, on=True)
        cleanup_worlds.append(world)
        digest = world.images[("prod/app", "v2")].digest
        delete_at_source(world, "prod/app", digest)
        jobs = await replicate_delete(world, event("prod/app", digest=digest))
        assert sorted((j.destination, j.state) for j in jobs) == [
            (EUW1, JobState.COMPLETE),
            (USW2, JobState.COMPLETE),
        ]
        assert tags_at(world, USW2, "prod/app") == ["v1"]
        assert tags_at(world, EUW1, "prod/app") == ["v1"]

    async def test_nothing_is_deleted_when_off(
        self, tmp_path: Path, registry_factory: RegistryFactory, cleanup_worlds: list[World]
    ) -> None:
        """With deleteReplication off (ECR's default) a delete makes no job and deletes nothing."""
        world = world_with(tmp_path, registry_factory, on=False)
        cleanup_worlds.append(world)
        digest = world.images[("prod/app", "v2")].digest
        delete_at_source(world, "prod/app", digest)
        assert await replicate_delete(world, event("prod/app", digest=digest)) == []
        assert tags_at(world, USW2, "prod/app") == ["v1", "v2"]
        assert tags_at(world, EUW1, "prod/app") == ["v1", "v2"]

    async def test_policy_without_batch_delete_denies_that_destination(
        self, tmp_path: Path, registry_factory: RegistryFactory, cleanup_worlds: list[World]
    ) -> None:
        """A destination whose policy lacks ecr:BatchDeleteImage records POLICY_DENIED and keeps
        the image; the same-account destination deletes it."""
        world = world_with(tmp_path, registry_factory, on=True)
        cleanup_worlds.append(world)
        policy_file = next(tmp_path.glob(f"*-{EUW1}-policy.json"))
        policy = json.loads(policy_file.read_text())
        for statement in policy["Statement"]:
            statement["Action"] = [a for a in statement["Action"] if a != "ecr:BatchDeleteImage"]
        policy_file.write_text(json.dumps(policy))
        digest = world.images[("prod/web", "1.0")].digest
        delete_at_source(world, "prod/web", digest)
        jobs = await replicate_delete(world, event("prod/web", digest=digest))
        by_destination = {j.destination: j for j in jobs}
        assert by_destination[USW2].state is JobState.COMPLETE
        assert by_destination[EUW1].state is JobState.FAILED
        assert by_destination[EUW1].failure_code == "POLICY_DENIED"
        assert "ecr:BatchDeleteImage" in (by_destination[EUW1].failure_reason or "")
        assert tags_at(world, USW2, "prod/web") == []
        assert tags_at(world, EUW1, "prod/web") == ["1.0"]

    async def test_tag_delete_removes_only_an_unshared_tag(
        self, tmp_path: Path, registry_factory: RegistryFactory, cleanup_worlds: list[World]
    ) -> None:
        """A tag delete on distribution (no tag deletion API) deletes the manifest when no other
        tag points at it, and fails with a reason, deleting nothing, when one does."""
        world = world_with(tmp_path, registry_factory, on=True)
        cleanup_worlds.append(world)
        v1 = world.images[("prod/app", "v1")]
        skopeo.run_skopeo(
            ["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
             "--preserve-digests", f"docker://{world.source.host}/prod/app:v1",
             f"docker://{world.source.host}/prod/app:stable"]
        )  # fmt: skip
        assert world.backfill("--destination", USW2)["exit"] == 0
        assert tags_at(world, USW2, "prod/app") == ["stable", "v1", "v2"]
        v2 = world.images[("prod/app", "v2")].digest
        delete_at_source(world, "prod/app", v2)
        jobs = await replicate_delete(world, event("prod/app", digest=v2, tag="v2"))
        assert {j.state for j in jobs} == {JobState.COMPLETE}
        assert tags_at(world, USW2, "prod/app") == ["stable", "v1"]
        # Distribution deletes tags only with their manifest: v1 and stable go together at the
        # source, and the destination is asked to delete stable alone.
        delete_at_source(world, "prod/app", v1.digest)
        shared = await replicate_delete(world, event("prod/app", digest=v1.digest, tag="stable"))
        failed = [j for j in shared if j.tag == "stable" and j.destination == USW2]
        assert failed[0].state is JobState.FAILED
        assert "also tagged v1" in (failed[0].failure_reason or "")
        assert tags_at(world, USW2, "prod/app") == ["stable", "v1"]

    @pytest.mark.parametrize("by_tag", [False, True], ids=["manifest-delete", "tag-delete"])
    async def test_forged_delete_of_a_served_image_deletes_nothing(
        self,
        tmp_path: Path,
        registry_factory: RegistryFactory,
        cleanup_worlds: list[World],
        by_tag: bool,
    ) -> None:
        """A delete event for an image the source still serves ends FAILED DELETE_REFUSED,
        the reason naming what the source serves, and both destinations keep it."""
        world = world_with(tmp_path, registry_factory, on=True)
        cleanup_worlds.append(world)
        digest = world.images[("prod/app", "v2")].digest
        forged = event("prod/app", digest=digest, tag="v2" if by_tag else None)
        jobs = await replicate_delete(world, forged)
        assert sorted((j.destination, j.state, j.failure_code) for j in jobs) == [
            (EUW1, JobState.FAILED, "DELETE_REFUSED"),
            (USW2, JobState.FAILED, "DELETE_REFUSED"),
        ]
        assert all("the source still serves" in (j.failure_reason or "") for j in jobs)
        assert tags_at(world, USW2, "prod/app") == ["v1", "v2"]
        assert tags_at(world, EUW1, "prod/app") == ["v1", "v2"]

    async def test_delete_of_a_tag_pushed_again_is_superseded(
        self, tmp_path: Path, registry_factory: RegistryFactory, cleanup_worlds: list[World]
    ) -> None:
        """A tag delete arriving after the tag was pushed again (another digest) at the source
        deletes nothing and ends SUPERSEDED, saying so."""
        world = world_with(tmp_path, registry_factory, on=True)
        cleanup_worlds.append(world)
        old = world.images[("prod/app", "v2")].digest
        delete_at_source(world, "prod/app", old)
        world.push("prod/app", "v2", seed=99)
        jobs = await replicate_delete(world, event("prod/app", digest=old, tag="v2"))
        assert {(j.state, j.failure_code) for j in jobs} == {(JobState.SUPERSEDED, None)}
        assert all("pushed again" in (j.failure_reason or "") for j in jobs)
        assert tags_at(world, USW2, "prod/app") == ["v1", "v2"]
