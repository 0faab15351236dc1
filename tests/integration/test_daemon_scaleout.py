"""Scale-out: two daemons in one MQTT shared-subscription group over one journal."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from replicator.domain.jobs import JobState
from tests.support.daemon import (
    DESTINATIONS,
    DaemonProcess,
    JournalReader,
    manifest_digest,
    push_images,
    start_stack,
    topology,
    write_config,
)
from tests.support.images import LayerSpec, OCILayout
from tests.support.journal_fixtures import PostgresServer
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.ports import free_port
from tests.support.registry_fixtures import RegistryFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KIB = 1024
BURST = 24
GROUP = "replicators"
# 24 images x 2 destinations on two daemons take seconds; 90 s covers a loaded CI machine.
BURST_FINISHED_SECONDS = 90.0


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The journal both daemons use: one SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


def test_two_daemons_in_a_shared_group_replicate_a_burst_once(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path: Path,
    shared_journal_url: str,
) -> None:
    """Two daemons with one shared_group on one broker and one journal: every image of a
    burst reaches both destinations, every job completes exactly once, both daemons work."""
    stack = start_stack(
        tmp_path / "one",
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        journal_url=shared_journal_url,
        shared_group=GROUP,
        client_id="fleet-1",
    )
    settings = dataclasses.replace(stack.settings, client_id="fleet-2", http_port=free_port())
    urls = {name: registry.url for name, registry in stack.registries.items()}
    second_config = write_config(tmp_path / "two", topology(urls), settings)
    second = DaemonProcess(second_config, settings.http_port)
    try:
        second.start()
        layout = OCILayout(tmp_path / "layout")
        images = [
            layout.image(f"s{n}", [LayerSpec(1, 4 * KIB), LayerSpec(20_000 + n, 2 * KIB)])
            for n in range(BURST)
        ]
        push_images(layout.path, stack.source.url, [("prod/fleet", f"s{n}") for n in range(BURST)])
        rows = JournalReader(shared_journal_url).wait_finished(
            BURST * len(DESTINATIONS), timeout=BURST_FINISHED_SECONDS
        )
    finally:
        second.stop()
        stack.stop()
    assert len(rows) == BURST * len(DESTINATIONS)
    assert {row.state for row in rows} == {JobState.COMPLETE}
    assert {row.attempts for row in rows} == {1}
    completions = [
        line["job"] for daemon in (stack.daemon, second) for line in daemon.events("job_complete")
    ]
    assert Counter(completions) == Counter({row.id: 1 for row in rows})
    for daemon in (stack.daemon, second):
        assert daemon.events("event_accepted"), "a daemon received no event"
        assert daemon.events("job_complete"), "a daemon ran no job"
    accepted = [
        line["tag"] for daemon in (stack.daemon, second) for line in daemon.events("event_accepted")
    ]
    assert sorted(accepted) == sorted(f"s{n}" for n in range(BURST))
    for image in images:
        assert image.tag is not None
        for destination in DESTINATIONS:
            url = stack.registries[destination].url
            assert manifest_digest(url, "prod/fleet", image.tag) == image.digest
