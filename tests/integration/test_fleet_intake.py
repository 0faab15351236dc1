"""A fleet's intake: three daemons on one PostgreSQL journal and one mosquitto with persistence
lose no push and delay none past 15 s when the member taking the events dies, or when the
broker restarts while the whole fleet is down."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from replicator.domain.jobs import JobState
from replicator.journal import JobRow
from tests.support.daemon import (
    DESTINATIONS,
    DaemonProcess,
    JournalReader,
    Stack,
    manifest_digest,
    metric_value,
    push_images,
    wait_for,
)
from tests.support.images import LayerSpec, OCILayout
from tests.support.journal_fixtures import PostgresServer
from tests.support.stack_fixtures import StackFactory, fleet_member, start_all, stop_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KIB = 1024
GROUP = "fleet"
MEMBERS = 3
# The bound: a member's death delays no push longer than this.
MAX_DELAY_SECONDS = 15.0
# The killed member stays down longer than the bound, so a push waiting for it shows.
DOWN_SECONDS = 18.0
# Pushes while the member is down, one every PUSH_EVERY_SECONDS: they span the whole outage.
PUSHES_WHILE_DOWN = 10
PUSH_EVERY_SECONDS = 1.5
# Pushes while the fleet is down and the broker restarted (the figure).
PUSHES_WHILE_FLEET_DOWN = 10
# Copies of a few KiB on loopback take milliseconds; the rest is a loaded 2-core machine.
FINISHED_SECONDS = 60.0


def start_fleet(stack_factory: StackFactory, journal_url: str) -> tuple[Stack, list[DaemonProcess]]:
    """Registries, the bridge and three daemons of one fleet (one journal, one group)."""
    stack = stack_factory(
        "member-1", journal_url=journal_url, shared_group=GROUP, client_id="member-1"
    )
    others = [fleet_member(stack, f"member-{n}") for n in range(2, MEMBERS + 1)]
    start_all(others)
    return stack, [stack.daemon, *others]


def intake_holder(members: list[DaemonProcess]) -> DaemonProcess:
    """The member that says it takes the fleet's events (the first one when none says so)."""
    for member in members:
        if metric_value(member.metrics(), "replicator_fleet_intake") == 1:
            return member
    return members[0]


def published(stack: Stack) -> float:
    """Webhooks the bridge has published with the broker's acknowledgement."""
    text = httpx.get(f"{stack.bridge.url}/metrics", timeout=10.0).text
    return metric_value(text, "replicator_bridge_requests_total", outcome="published")


def delays(rows: list[JobRow]) -> list[float]:
    """Seconds from each job's push to its end."""
    found = []
    for row in rows:
        assert row.pushed_at is not None
        assert row.finished_at is not None
        found.append((row.finished_at - row.pushed_at).total_seconds())
    return found


def assert_replicated_once(
    rows: list[JobRow], stack: Stack, members: list[DaemonProcess], images: dict[str, str]
) -> None:
    """Every job COMPLETE and completed by exactly one member, every image at both
    destinations."""
    assert {row.state for row in rows} == {JobState.COMPLETE}
    completions = Counter(
        line["job"] for member in members for line in member.events("job_complete")
    )
    assert completions == Counter({row.id: 1 for row in rows})
    for tag, digest in images.items():
        for destination in DESTINATIONS:
            url = stack.registries[destination].url
            assert manifest_digest(url, "prod/fleet", tag) == digest, (tag, destination)


def test_a_dead_member_delays_no_push_past_15_s(
    stack_factory: StackFactory, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The member taking the fleet's events is killed with -9 for 18 s while 10 pushes arrive:
    every push reaches both destinations within 15 s of its push, each job completed once."""
    journal_url = postgres_server.create_database()
    stack, members = start_fleet(stack_factory, journal_url)
    layout = OCILayout(tmp_path / "layout")
    tags = [f"d{n}" for n in range(PUSHES_WHILE_DOWN)]
    images = {
        tag: layout.image(tag, [LayerSpec(1, 4 * KIB), LayerSpec(40_000 + n, 2 * KIB)]).digest
        for n, tag in enumerate(tags)
    }
    try:
        doomed = intake_holder(members)
        doomed.kill()
        killed_at = time.monotonic()
        for tag in tags:
            push_images(layout.path, stack.source.url, [("prod/fleet", tag)])
            time.sleep(PUSH_EVERY_SECONDS)
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - killed_at)))
        doomed.start()
        rows = JournalReader(journal_url).wait_finished(
            len(tags) * len(DESTINATIONS), timeout=FINISHED_SECONDS
        )
    finally:
        stop_all(members)
        stack.bridge.stop()
    waited = delays(rows)
    print(f"push to COMPLETE with a member down: max {max(waited):.2f} s, jobs {len(rows)}")
    assert len(rows) == len(tags) * len(DESTINATIONS)
    assert max(waited) <= MAX_DELAY_SECONDS, sorted(waited)
    assert_replicated_once(rows, stack, members, images)


def test_pushes_while_the_fleet_is_down_survive_a_broker_restart(
    stack_factory: StackFactory, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """All members stopped, the broker restarted, 10 pushes acknowledged by the bridge, the
    members started again: all 10 reach both destinations, each job completed once."""
    journal_url = postgres_server.create_database()
    stack, members = start_fleet(stack_factory, journal_url)
    layout = OCILayout(tmp_path / "layout")
    tags = [f"r{n}" for n in range(PUSHES_WHILE_FLEET_DOWN)]
    images = {
        tag: layout.image(tag, [LayerSpec(1, 4 * KIB), LayerSpec(50_000 + n, 2 * KIB)]).digest
        for n, tag in enumerate(tags)
    }
    try:
        stop_all(members)
        stack.broker.restart()
        push_images(layout.path, stack.source.url, [("prod/fleet", tag) for tag in tags])
        wait_for(
            lambda: published(stack) >= len(tags),
            timeout=FINISHED_SECONDS,
            what="the bridge's broker acknowledging every push",
        )
        start_all(members)
        rows = JournalReader(journal_url).wait_finished(
            len(tags) * len(DESTINATIONS), timeout=FINISHED_SECONDS
        )
        expositions = [member.metrics() for member in members]
    finally:
        stop_all(members)
        stack.bridge.stop()
    # One member takes the events, one runs the chores, and only its gauges count the jobs.
    holding = [metric_value(text, "replicator_fleet_intake") for text in expositions]
    assert sorted(holding) == [0, 0, 1]
    holding = [metric_value(text, "replicator_fleet_chores") for text in expositions]
    assert sorted(holding) == [0, 0, 1]
    # The broker kept its store, so the member taking the intake over found the session.
    assert not [line for member in members for line in member.events("mqtt_session_lost")]
    others = [text for text, held in zip(expositions, holding, strict=True) if not held]
    assert [metric_value(text, "replicator_jobs") for text in others] == [0, 0]
    print(f"replicated after a broker restart: {len(rows) // len(DESTINATIONS)} of {len(tags)}")
    assert len(rows) == len(tags) * len(DESTINATIONS)
    assert_replicated_once(rows, stack, members, images)
