"""The destination follows what the source serves now, end to end: rollbacks, events out of
order, a re-push after a replicated delete, a forged delete. skopeo pushes to docker-registry,
whose webhooks reach the daemon through the bridge and mosquitto; destinations are read back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from replicator.domain.jobs import JobKind, JobState
from replicator.journal import JobRow
from tests.support import skopeo
from tests.support.daemon import (
    DESTINATIONS,
    USE1,
    JournalReader,
    Stack,
    envelope,
    manifest_digest,
    metric_value,
    publish,
    start_stack,
    topology,
    wait_for,
    write_config,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import Fault, blob_get
from tests.support.images import BuiltImage, LayerSpec, OCILayout
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.stack_fixtures import with_delete_replication

pytestmark = pytest.mark.integration

KIB = 1024
# A push reaches both destinations in well under a second; 30 s covers a loaded CI machine.
REPLICATED_WITHIN_SECONDS = 30.0
EVENTS_TOPIC = f"registry/{USE1}/events"
# How long the fault proxy holds a source blob read of the older push: the newer push is made
# and replicated meanwhile (about a second on this machine), so the older copy reaches its tag
# PUT after the newer one.
STALL_SECONDS = 4.0
RPO = "replicator_oldest_unreplicated_push_age_seconds"


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


@dataclass
class Manual:
    """A stack whose source sends no webhooks (the test publishes the events, in the order it
    wants) and which the daemon reads through a fault proxy."""

    stack: Stack
    proxy: FaultProxy


@pytest.fixture(scope="module")
def manual(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Manual]:
    """use1 (no webhooks, read through a fault proxy), usw2, euw1, broker, bridge, daemon."""
    proxies: list[FaultProxy] = []

    def behind_proxy(registry: Registry) -> str:
        proxies.append(FaultProxy(registry.url))
        proxies[-1].start()
        return proxies[-1].url

    started = start_stack(
        tmp_path_factory.mktemp("manual"),
        mosquitto_factory(),
        lambda _url: registry_factory(),
        notifications=False,
        front={USE1: behind_proxy},
    )
    try:
        yield Manual(started, proxies[0])
    finally:
        started.stop()
        for proxy in proxies:
            proxy.stop()


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


def announce(stack: Stack, repository: str, image: BuiltImage, tag: str) -> None:
    """Publish the push event of `image` as repository:tag, as the source's webhook would."""
    publish(stack.broker.port, EVENTS_TOPIC, envelope(repository, image.digest, tag=tag))


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


def gauges_count(stack: Stack, rows: list[JobRow]) -> bool:
    """Whether the daemon's journal gauges were read since `rows` ended: its jobs gauge counts
    every job of their state at their destination."""
    metrics, jobs = stack.daemon.metrics(), JournalReader(stack.settings.journal_url).jobs()
    for row in rows:
        state, destination = row.state.value.lower(), row.destination
        journalled = sum(1 for j in jobs if j.state is row.state and j.destination == destination)
        if metric_value(metrics, "replicator_jobs", state=state, destination=destination) < (
            journalled
        ):
            return False
    return True


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


class TestOutOfOrder:
    """Events of a quick A -> B arriving late or reversed never leave a destination on A."""

    def test_events_delivered_newest_first(self, manual: Manual, layout: OCILayout) -> None:
        """prod/ooo:v1 pushed as A then B, their events delivered B first, then A: both
        destinations end on B, and A's jobs end SUPERSEDED, saying what the tag names now."""
        stack = manual.stack
        a, b = build(layout, "ooo-a", seed=30), build(layout, "ooo-b", seed=31)
        push(stack, layout, "ooo-a", "prod/ooo:v1")
        push(stack, layout, "ooo-b", "prod/ooo:v1")
        announce(stack, "prod/ooo", b, "v1")
        wait_served(stack, "prod/ooo", "v1", b.digest)
        announce(stack, "prod/ooo", a, "v1")
        rows = wait_jobs_finished(stack, "prod/ooo", 2 * len(DESTINATIONS))
        assert {(r.digest, r.state) for r in rows} == {
            (b.digest, JobState.COMPLETE),
            (a.digest, JobState.SUPERSEDED),
        }
        assert all(b.digest in (r.failure_reason or "") for r in rows if r.digest == a.digest)
        for destination in DESTINATIONS:
            assert served(stack, destination, "prod/ooo", "v1") == b.digest

    def test_tag_moved_while_the_older_push_was_copied(
        self, manual: Manual, layout: OCILayout
    ) -> None:
        """A's copy is held on a blob read while B is pushed and replicated: when A's copy
        reaches its tag PUT, the source's tag names B, so A is left untagged, its jobs end
        SUPERSEDED, and both destinations serve B."""
        stack = manual.stack
        a, b = build(layout, "race-a", seed=32), build(layout, "race-b", seed=33)
        push(stack, layout, "race-a", "prod/race:v1")
        held = manual.proxy.add(Fault.stall(blob_get(a.layer_digests[0]), STALL_SECONDS, times=2))
        try:
            announce(stack, "prod/race", a, "v1")
            wait_for(lambda: held.injected > 0, timeout=REPLICATED_WITHIN_SECONDS, what="A held")
            push(stack, layout, "race-b", "prod/race:v1")
            announce(stack, "prod/race", b, "v1")
            wait_served(stack, "prod/race", "v1", b.digest)
            rows = wait_jobs_finished(stack, "prod/race", 2 * len(DESTINATIONS))
        finally:
            manual.proxy.clear()
        assert {(r.digest, r.state) for r in rows} == {
            (b.digest, JobState.COMPLETE),
            (a.digest, JobState.SUPERSEDED),
        }
        for destination in DESTINATIONS:
            assert served(stack, destination, "prod/race", "v1") == b.digest
            assert manifest_digest(stack.registries[destination].url, "prod/race", a.digest)
        assert stack.daemon.events("job_superseded")


class TestRedelivery:
    """The same event delivered again is no new work, in the same bytes or in other ones."""

    def test_redelivered_event_is_one_job_per_destination(
        self, manual: Manual, layout: OCILayout
    ) -> None:
        """One push event published three times, once re-serialised (other bytes, the same
        event id), makes one job per destination."""
        stack = manual.stack
        image = build(layout, "redelivered", seed=34)
        push(stack, layout, "redelivered", "prod/redelivered:v1")
        payload = envelope("prod/redelivered", image.digest, tag="v1")
        reserialised = json.dumps(json.loads(payload), indent=2).encode()
        for message in (payload, reserialised, payload):
            publish(stack.broker.port, EVENTS_TOPIC, message)
        fingerprints = {hashlib.sha256(m).hexdigest() for m in (payload, reserialised)}
        reader = JournalReader(stack.settings.journal_url)
        wait_for(
            lambda: len([e for e in reader.events() if e.payload_sha256 in fingerprints]) == 3,
            timeout=REPLICATED_WITHIN_SECONDS,
            what="three messages recorded",
        )
        rows = wait_jobs_finished(stack, "prod/redelivered", len(DESTINATIONS))
        assert len(rows) == len(DESTINATIONS)
        assert {r.state for r in rows} == {JobState.COMPLETE}


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

    def test_push_deleted_before_its_copy_is_superseded_and_leaves_no_lag(
        self, manual: Manual, layout: OCILayout
    ) -> None:
        """A push whose image is deleted at the source before its job reads it (its event
        delivered after the delete) ends SUPERSEDED at both destinations, saying so, and the
        recovery-point gauge goes back to 0: nothing is left to copy, ever."""
        stack = manual.stack
        image = build(layout, "vanished", seed=42)
        push(stack, layout, "vanished", "prod/vanished:v1")
        url = f"{stack.source.url}/v2/prod/vanished/manifests/{image.digest}"
        assert httpx.delete(url).status_code == httpx.codes.ACCEPTED
        announce(stack, "prod/vanished", image, "v1")
        rows = wait_jobs_finished(stack, "prod/vanished", len(DESTINATIONS))
        wait_for(
            lambda: gauges_count(stack, rows), timeout=REPLICATED_WITHIN_SECONDS,
            what="the journal's gauges read after the jobs ended",
        )  # fmt: skip
        metrics = stack.daemon.metrics()
        assert [metric_value(metrics, RPO, destination=d) for d in DESTINATIONS] == [0, 0]
        assert {(r.state, r.failure_code) for r in rows} == {(JobState.SUPERSEDED, None)}
        assert all("deleted at the source" in (r.failure_reason or "") for r in rows)

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
