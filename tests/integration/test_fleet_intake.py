"""A fleet's intake: three daemons on one PostgreSQL journal and one mosquitto with persistence
lose no push and delay none past 15 s when the member taking the events dies, or when the
broker restarts while the whole fleet is down; a member on the dead one's host takes the events
over at once, not when the dead one's lease ends."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from replicator.daemon.fleet import intake_lease
from replicator.domain.fleet.leases import Lease
from replicator.domain.jobs import JobState
from replicator.journal import JobRow
from replicator.journal.claimers import open_journal
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
from tests.support.images import OCILayout
from tests.support.journal_fixtures import PostgresServer
from tests.support.stack_fixtures import StackFactory, fleet_member, start_all, stop_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

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


@dataclass
class Fleet:
    """Registries, the bridge and MEMBERS daemons of one group on one PostgreSQL journal."""

    stack: Stack
    members: list[DaemonProcess]
    journal_url: str
    layout: OCILayout

    def images(self, prefix: str, count: int, first_layer: int) -> dict[str, str]:
        """`count` images tagged `<prefix>0`.. in the layout (a shared base layer and one of
        their own, seeded from `first_layer`): their digests by tag."""
        built = self.layout.siblings(prefix, count, first_seed=first_layer)
        return {image.tag or "": image.digest for image in built}

    def stop(self) -> None:
        """Stop every member and the bridge (their logs are then complete)."""
        stop_all(self.members)
        self.stack.bridge.stop()


@pytest.fixture
def fleet(
    stack_factory: StackFactory, postgres_server: PostgresServer, tmp_path: Path
) -> Iterator[Fleet]:
    """A fleet started on a fresh database; its members stopped after the test."""
    journal_url = postgres_server.create_database()
    stack = stack_factory(
        "member-1", journal_url=journal_url, shared_group=GROUP, client_id="member-1"
    )
    others = [fleet_member(stack, f"member-{n}") for n in range(2, MEMBERS + 1)]
    start_all(others)
    started = Fleet(stack, [stack.daemon, *others], journal_url, OCILayout(tmp_path / "layout"))
    yield started
    started.stop()


def intake_holder(members: list[DaemonProcess]) -> DaemonProcess:
    """The member that says it takes the fleet's events (the first one when none says so)."""
    for member in members:
        if metric_value(member.metrics(), "replicator_fleet_intake") == 1:
            return member
    return members[0]


def stored_lease(journal_url: str, name: str) -> Lease:
    """The fleet's lease `name` as the journal holds it now."""

    async def read() -> Lease | None:
        async with await open_journal(journal_url) as journal:
            return await journal.lease(name)

    lease = asyncio.run(read())
    assert lease is not None, f"no lease {name} in the journal"
    return lease


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


def test_a_dead_member_delays_no_push_past_15_s(fleet: Fleet) -> None:
    """The member taking the fleet's events is killed with -9 for 18 s while 10 pushes arrive:
    every push reaches both destinations within 15 s of its push, each job completed once."""
    stack, members = fleet.stack, fleet.members
    images = fleet.images("d", PUSHES_WHILE_DOWN, 40_000)
    doomed = intake_holder(members)
    doomed.kill()
    killed_at = time.monotonic()
    for tag in images:
        push_images(fleet.layout.path, stack.source.url, [("prod/fleet", tag)])
        time.sleep(PUSH_EVERY_SECONDS)
    time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - killed_at)))
    doomed.start()
    rows = JournalReader(fleet.journal_url).wait_finished(
        len(images) * len(DESTINATIONS), timeout=FINISHED_SECONDS
    )
    fleet.stop()
    waited = delays(rows)
    print(f"push to COMPLETE with a member down: max {max(waited):.2f} s, jobs {len(rows)}")
    assert len(rows) == len(images) * len(DESTINATIONS)
    assert max(waited) <= MAX_DELAY_SECONDS, sorted(waited)
    assert_replicated_once(rows, stack, members, images)


def test_pushes_while_the_fleet_is_down_survive_a_broker_restart(fleet: Fleet) -> None:
    """All members stopped, the broker restarted, 10 pushes acknowledged by the bridge, the
    members started again: all 10 reach both destinations, each job completed once."""
    stack, members = fleet.stack, fleet.members
    images = fleet.images("r", PUSHES_WHILE_FLEET_DOWN, 50_000)
    stop_all(members)
    stack.broker.restart()
    push_images(fleet.layout.path, stack.source.url, [("prod/fleet", tag) for tag in images])
    wait_for(
        lambda: published(stack) >= len(images),
        timeout=FINISHED_SECONDS,
        what="the bridge's broker acknowledging every push",
    )
    start_all(members)
    rows = JournalReader(fleet.journal_url).wait_finished(
        len(images) * len(DESTINATIONS), timeout=FINISHED_SECONDS
    )
    expositions = [member.metrics() for member in members]
    fleet.stop()
    # One member takes the events, one runs the chores, and only its gauges count the jobs.
    holding = [metric_value(text, "replicator_fleet_intake") for text in expositions]
    assert sorted(holding) == [0, 0, 1]
    holding = [metric_value(text, "replicator_fleet_chores") for text in expositions]
    assert sorted(holding) == [0, 0, 1]
    # The broker kept its store, so the member taking the intake over found the session.
    assert not [line for member in members for line in member.events("mqtt_session_lost")]
    others = [text for text, held in zip(expositions, holding, strict=True) if not held]
    assert [metric_value(text, "replicator_jobs") for text in others] == [0, 0]
    print(f"replicated after a broker restart: {len(rows) // len(DESTINATIONS)} of {len(images)}")
    assert len(rows) == len(images) * len(DESTINATIONS)
    assert_replicated_once(rows, stack, members, images)


def test_a_push_after_the_holders_death_and_a_broker_restart_is_taken_before_its_lease_ends(
    fleet: Fleet,
) -> None:
    """The member taking the fleet's events is killed with -9 and started again at once (as
    systemd's Restart= does), an image is pushed and the broker restarted (the history
    checker's fleet seed 5): the push is journalled before the dead member's lease would have
    ended, because a member on its host knows it dead and takes the events over at once, and
    it reaches both destinations."""
    stack, members = fleet.stack, fleet.members
    images = fleet.images("k", 1, 60_000)
    wait_for(
        lambda: any(metric_value(m.metrics(), "replicator_fleet_intake") == 1 for m in members),
        timeout=FINISHED_SECONDS,
        what="a member taking the fleet's events",
    )
    doomed = intake_holder(members)
    doomed.kill()
    # Read once it is dead: no renewal can move the lease's end any more.
    dead_lease = stored_lease(fleet.journal_url, intake_lease(GROUP))
    doomed.start(ready=False)
    push_images(fleet.layout.path, stack.source.url, [("prod/fleet", tag) for tag in images])
    wait_for(
        lambda: published(stack) >= len(images),
        timeout=FINISHED_SECONDS,
        what="the bridge's broker acknowledging the push",
    )
    stack.broker.restart()
    reader = JournalReader(fleet.journal_url)
    rows = reader.wait_finished(len(images) * len(DESTINATIONS), timeout=FINISHED_SECONDS)
    events = reader.events()
    fleet.stop()
    # At least once: a broker restarted before our PUBACK delivers the event again.
    assert events, "the push's event was never journalled"
    received = min(event.received_at.timestamp() for event in events)
    print(f"push journalled {dead_lease.expires - received:.2f} s before the dead lease's end")
    assert received < dead_lease.expires, (
        f"journalled {received - dead_lease.expires:.2f} s after the dead member's lease ended"
    )
    assert_replicated_once(rows, stack, members, images)
