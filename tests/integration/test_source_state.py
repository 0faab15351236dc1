"""The destination follows what the source serves now, end to end: rollbacks, events out of
order, a re-push after a replicated delete, a forged delete. skopeo pushes to docker-registry,
whose webhooks reach the daemon through the bridge and mosquitto; destinations are read back."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from replicator.domain.jobs import JobKind, JobState
from replicator.journal import JobRow
from tests.integration.test_backfill import with_delete_replication
from tests.support import skopeo
from tests.support.daemon import (
    DESTINATIONS,
    USE1,
    JournalReader,
    Stack,
    envelope,
    manifest_digest,
    publish,
    start_stack,
    topology,
    wait_for,
    write_config,
)
from tests.support.images import BuiltImage, LayerSpec, OCILayout
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory

pytestmark = pytest.mark.integration

KIB = 1024
# A push reaches both destinations in well under a second; 30 s covers a loaded CI machine.
REPLICATED_WITHIN_SECONDS = 30.0
EVENTS_TOPIC = f"registry/{USE1}/events"


def with_deletes(stack: Stack) -> Stack:
    """The stack's config with deleteReplication on (and ecr:BatchDeleteImage allowed), its
    daemon started on it."""
    urls = {name: registry.url for name, registry in stack.registries.items()}
    specs = [with_delete_replication(spec) for spec in topology(urls)]
    write_config(stack.folder, specs, stack.settings)
    stack.daemon.start()
    return stack


@pytest.fixture(scope="module")
def live(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """use1 (its webhooks to the bridge), usw2, euw1, the broker, the bridge and the daemon,
    with delete replication on."""
    started = start_stack(
        tmp_path_factory.mktemp("live"),
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        start_daemon=False,
    )
    yield with_deletes(started)
    started.stop()


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> OCILayout:
    """The images of this module, in one OCI layout."""
    return OCILayout(tmp_path_factory.mktemp("source-state-layout"))


def build(layout: OCILayout, name: str, seed: int) -> BuiltImage:
    """A small image of its own (one layer, seeded) named `name` in the layout."""
    return layout.image(name, [LayerSpec(seed, 4 * KIB)], label=name)


def push(stack: Stack, layout: OCILayout, name: str, reference: str) -> None:
    """Push the layout's `name` to the source as `reference` (repository:tag) with skopeo."""
    skopeo.push_layout(layout.path, name, f"{stack.source.host}/{reference}")


def served(stack: Stack, destination: str, repository: str, tag: str) -> str | None:
    """The digest `destination` serves for repository:tag, or None."""
    return manifest_digest(stack.registries[destination].url, repository, tag)


def wait_served(stack: Stack, repository: str, tag: str, digest: str | None) -> None:
    """Wait until both destinations serve `digest` (None: nothing) under repository:tag."""
    for destination in DESTINATIONS:
        wait_for(
            lambda destination=destination: served(stack, destination, repository, tag) == digest,
            timeout=REPLICATED_WITHIN_SECONDS,
            what=f"{repository}:{tag} = {digest} at {destination}",
        )


def jobs_of(stack: Stack, repository: str, kind: JobKind = JobKind.COPY) -> list[JobRow]:
    """The journal's jobs of `repository` of one kind, oldest first."""
    rows = JournalReader(stack.settings.journal_url).jobs()
    return sorted((r for r in rows if r.repository == repository and r.kind is kind), key=_id)


def _id(row: JobRow) -> int:
    return row.id


def wait_jobs_finished(
    stack: Stack, repository: str, count: int, kind: JobKind = JobKind.COPY
) -> list[JobRow]:
    """Wait until `repository` has `count` jobs of `kind`, all finished; those jobs."""
    finished = (JobState.COMPLETE, JobState.FAILED, JobState.SUPERSEDED)
    rows: list[JobRow] = []

    def done() -> bool:
        nonlocal rows
        rows = jobs_of(stack, repository, kind)
        return len(rows) >= count and all(r.state in finished for r in rows)

    wait_for(done, timeout=REPLICATED_WITHIN_SECONDS, what=f"{count} {kind} jobs of {repository}")
    return rows


class TestPushes:
    """A newer push of a tag is new work, whatever was replicated before."""

    def test_rollback_is_replicated(self, live: Stack, layout: OCILayout) -> None:
        """prod/roll:v1 pushed as A, then B, then A again with skopeo: both destinations end
        on A, and the third push made jobs of its own."""
        a, b = build(layout, "roll-a", seed=10), build(layout, "roll-b", seed=11)
        push(live, layout, "roll-a", "prod/roll:v1")
        wait_served(live, "prod/roll", "v1", a.digest)
        push(live, layout, "roll-b", "prod/roll:v1")
        wait_served(live, "prod/roll", "v1", b.digest)
        push(live, layout, "roll-a", "prod/roll:v1")
        wait_served(live, "prod/roll", "v1", a.digest)
        rows = wait_jobs_finished(live, "prod/roll", 3 * len(DESTINATIONS))
        assert [r.digest for r in rows] == [a.digest] * 2 + [b.digest] * 2 + [a.digest] * 2
        assert {r.state for r in rows} == {JobState.COMPLETE}

    def test_repush_after_a_replicated_delete_is_replicated(
        self, live: Stack, layout: OCILayout
    ) -> None:
        """An image deleted at the source (the delete replicated) and pushed again, same
        digest and tag, is served by both destinations again."""
        image = build(layout, "repush", seed=20)
        push(live, layout, "repush", "prod/repush:v1")
        wait_served(live, "prod/repush", "v1", image.digest)
        url = f"{live.source.url}/v2/prod/repush/manifests/{image.digest}"
        assert httpx.delete(url).status_code == httpx.codes.ACCEPTED
        wait_served(live, "prod/repush", "v1", None)
        push(live, layout, "repush", "prod/repush:v1")
        wait_served(live, "prod/repush", "v1", image.digest)


class TestDeletes:
    """Deletes are replicated only once the source confirms the image gone."""

    def test_forged_delete_of_a_served_image_deletes_nothing(
        self, live: Stack, layout: OCILayout
    ) -> None:
        """A delete event for an image still served at the source, published on use1's topic,
        deletes nothing at either destination; its jobs end FAILED DELETE_REFUSED with the
        reason."""
        image = build(layout, "forged", seed=40)
        push(live, layout, "forged", "prod/forged:v1")
        wait_served(live, "prod/forged", "v1", image.digest)
        forged = envelope("prod/forged", image.digest, action="delete")
        publish(live.broker.port, EVENTS_TOPIC, forged)
        deletes = wait_jobs_finished(live, "prod/forged", len(DESTINATIONS), JobKind.DELETE)
        assert {(r.state, r.failure_code) for r in deletes} == {(JobState.FAILED, "DELETE_REFUSED")}
        assert all("the source still serves" in (r.failure_reason or "") for r in deletes)
        for destination in DESTINATIONS:
            assert served(live, destination, "prod/forged", "v1") == image.digest
        refused = live.daemon.events("delete_refused")
        assert any(image.digest in line.get("reason", "") for line in refused)

    def test_real_delete_is_replicated(self, live: Stack, layout: OCILayout) -> None:
        """A manifest deleted at the source (its webhook the only event) is deleted at both
        destinations: the source answers 404, so the delete is genuine."""
        image = build(layout, "deleted", seed=41)
        push(live, layout, "deleted", "prod/deleted:v1")
        wait_served(live, "prod/deleted", "v1", image.digest)
        url = f"{live.source.url}/v2/prod/deleted/manifests/{image.digest}"
        assert httpx.delete(url).status_code == httpx.codes.ACCEPTED
        wait_served(live, "prod/deleted", "v1", None)
        deletes = wait_jobs_finished(live, "prod/deleted", len(DESTINATIONS), JobKind.DELETE)
        assert {r.state for r in deletes} == {JobState.COMPLETE}
