"""Scale-out: two daemons of one fleet (one `shared_group`) over one journal: one takes the
events through the fleet's intake session, both copy; a dead peer's claimed jobs are swept back
to the queue by the survivor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from replicator.domain.jobs import JobState
from tests.support.daemon import (
    DESTINATIONS,
    USW2,
    JournalReader,
    manifest_digest,
    push_images,
    wait_for,
)
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import OCILayout
from tests.support.journal_fixtures import PostgresServer
from tests.support.registry_server import Registry
from tests.support.stack_fixtures import StackFactory, fleet_member

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BURST = 24
GROUP = "replicators"
# 24 images x 2 destinations on two daemons take seconds; 90 s covers a loaded CI machine.
BURST_FINISHED_SECONDS = 90.0
# The orphan test's burst: enough events that the doomed daemon gets (and claims) some of them.
ORPHAN_BURST = 8
# [workers] orphan_after in the orphan test: well above a loopback copy (milliseconds), so the
# survivor never takes its own running jobs, short enough that the test waits seconds only.
ORPHAN_AFTER_SECONDS = 3.0
# The doomed daemon's manifest PUTs to usw2 are held longer than the whole test: its claims
# can only end by the sweep.
HELD_SECONDS = 120.0
# Jobs recorded, one held claim, then orphan_after plus a sweep and the copies: seconds.
ORPHAN_STEP_SECONDS = 20.0
MANIFEST_PUT = requests("PUT", r"/manifests/")


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The journal both daemons use: one SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


def test_two_daemons_in_a_shared_group_replicate_a_burst_once(
    stack_factory: StackFactory, tmp_path: Path, shared_journal_url: str
) -> None:
    """Two daemons with one shared_group on one broker and one journal: every image of a
    burst reaches both destinations, every job completes exactly once (whichever member claims
    it), and the events come in through one of them (the fleet's one intake session)."""
    stack = stack_factory(
        "fleet-1", journal_url=shared_journal_url, shared_group=GROUP, client_id="fleet-1"
    )
    second = fleet_member(stack, "fleet-2")
    try:
        second.start()
        layout = OCILayout(tmp_path / "layout")
        images = layout.siblings("s", BURST, first_seed=20_000)
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
    takers = [d for d in (stack.daemon, second) if d.events("event_accepted")]
    assert len(takers) == 1, "the events did not come through one intake session"
    accepted = [
        line["tag"] for daemon in (stack.daemon, second) for line in daemon.events("event_accepted")
    ]
    assert sorted(accepted) == sorted(f"s{n}" for n in range(BURST))
    for image in images:
        assert image.tag is not None
        for destination in DESTINATIONS:
            url = stack.registries[destination].url
            assert manifest_digest(url, "prod/fleet", image.tag) == image.digest


def with_orphan_after(config: Path, seconds: float) -> Path:
    """Set [workers] orphan_after in a config written by write_config; the config's path."""
    text = config.read_text()
    assert text.count("[workers]\n") == 1
    config.write_text(text.replace("[workers]\n", f"[workers]\norphan_after = {seconds}\n"))
    return config


def test_survivor_sweeps_a_killed_peers_claimed_jobs(
    stack_factory: StackFactory,
    fault_proxy_factory: Callable[[Registry], FaultProxy],
    tmp_path: Path,
) -> None:
    """A fleet daemon killed with -9 while holding claimed jobs: after orphan_after the
    survivor re-queues them, and every image ends at both destinations, each job COMPLETE and
    completed exactly once."""
    journal_url = f"sqlite:///{tmp_path / 'shared.db'}"
    proxies: list[FaultProxy] = []

    def held_usw2(registry: Registry) -> str:
        proxies.append(fault_proxy_factory(registry))
        return proxies[-1].url

    stack = stack_factory(
        "doomed",
        journal_url=journal_url,
        shared_group=GROUP,
        client_id="fleet-doomed",
        front={USW2: held_usw2},
        start_daemon=False,
    )
    (proxy,) = proxies
    held = proxy.add(Fault.stall(MANIFEST_PUT, HELD_SECONDS, times=ORPHAN_BURST * 2))
    doomed = stack.daemon
    survivor = fleet_member(stack, "fleet-survivor")
    with_orphan_after(survivor.config, ORPHAN_AFTER_SECONDS)
    journal = JournalReader(journal_url)
    try:
        with_orphan_after(stack.config, ORPHAN_AFTER_SECONDS)
        doomed.start()
        survivor.start()
        layout = OCILayout(tmp_path / "layout")
        images = layout.siblings("o", ORPHAN_BURST, first_seed=30_000)
        tags = [("prod/orphans", f"o{n}") for n in range(ORPHAN_BURST)]
        push_images(layout.path, stack.source.url, tags)
        # Every event journaled (so none waits unacknowledged in the doomed daemon's session)
        # and at least one usw2 copy held inside the doomed daemon: then it dies.
        wait_for(
            lambda: len(journal.jobs()) >= ORPHAN_BURST * len(DESTINATIONS) and held.injected > 0,
            timeout=ORPHAN_STEP_SECONDS,
            what="every job recorded and a copy held in the doomed daemon",
        )
        doomed.kill()
        rows = journal.wait_finished(ORPHAN_BURST * len(DESTINATIONS), timeout=ORPHAN_STEP_SECONDS)
    finally:
        survivor.stop()
        stack.stop()
    assert len(rows) == ORPHAN_BURST * len(DESTINATIONS)
    assert {row.state for row in rows} == {JobState.COMPLETE}
    # A job in flight at the kill is resumed with the death counted, not an attempt.
    orphans = {row.id for row in rows if row.deaths > 0}
    assert orphans, "the doomed daemon held no claimed job when killed"
    # The held usw2 copies were in flight at the kill; an euw1 copy may have been too (since the
    # fleet's intake holder hears of new jobs first, it claims more of a burst).
    assert USW2 in {row.destination for row in rows if row.id in orphans}
    assert [line["resumed"] for line in survivor.events("daemon_starting")] == [0]
    assert survivor.events("jobs_resumed"), "the survivor swept nothing"
    survivor_done = Counter(line["job"] for line in survivor.events("job_complete"))
    doomed_done = Counter(line["job"] for line in doomed.events("job_complete"))
    assert survivor_done + doomed_done == Counter({row.id: 1 for row in rows})
    assert orphans <= set(survivor_done)
    for image in images:
        assert image.tag is not None
        for destination in DESTINATIONS:
            url = stack.registries[destination].url
            assert manifest_digest(url, "prod/orphans", image.tag) == image.digest
