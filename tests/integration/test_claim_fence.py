"""The double claim: a job re-queued while its daemon still copies it, and claimed by a peer,
is finished once, by the peer; the daemon's own late write is refused and logged."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session

from replicator.domain.jobs import JobState
from replicator.domain.jobs.ends import Completed
from replicator.journal import JobRow, job_claims
from replicator.journal.schema import create_journal_engine
from tests.support.daemon import EUW1, USW2, JournalReader, push_images, start_stack, wait_for
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import LayerSpec, OCILayout
from tests.support.journal_fixtures import PostgresServer
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KIB = 1024
# The daemon's manifest PUT to usw2 is held this long: time for the peer to take the job.
HELD_SECONDS = 4.0
# Start-up, one push and its copy on a loaded 2-core machine.
STEP_SECONDS = 30.0
# Who the peer is: a process of another host, as a fleet member's claim records it.
PEER = "peer-host/m:pid:[1]/77/1"
DONE = Completed()


@pytest.fixture(params=["sqlite", "postgresql"])
def fenced_journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The daemon's journal: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fenced.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


def requeue_and_claim(url: str, dead: str) -> JobRow:
    """What a peer does with a job it takes for an orphan, in one transaction: re-queue the
    jobs of claimer `dead` and claim the job in its own name."""
    engine = create_journal_engine(url)
    try:
        with Session(engine) as session, session.begin():
            now = datetime.now(UTC)
            job_claims.resume(session, now, datetime(2000, 1, 1, tzinfo=UTC), None, dead=[dead])
            [row] = job_claims.claim(session, 1, now, PEER)
            return row
    finally:
        engine.dispose()


def peer_completes(url: str, row: JobRow) -> None:
    """The peer's COMPLETE of the job it claimed."""
    engine = create_journal_engine(url)
    try:
        with Session(engine) as session, session.begin():
            claim = job_claims.Claim(PEER, row.started_at)
            job_claims.end(session, row.id, claim, DONE, datetime.now(UTC))
    finally:
        engine.dispose()


def test_a_job_claimed_twice_completes_once(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    fault_proxy_factory: Callable[[Registry], FaultProxy],
    tmp_path: Path,
    fenced_journal_url: str,
) -> None:
    """The daemon's copy to usw2 is held; meanwhile a peer re-queues the job and claims it.
    The daemon's COMPLETE after the hold is refused and logged job_claim_lost; the peer's
    lands: the job is COMPLETE once, in the peer's name, and the daemon reports no result."""
    proxies: list[FaultProxy] = []

    def held_usw2(registry: Registry) -> str:
        proxies.append(fault_proxy_factory(registry))
        return proxies[-1].url

    stack = start_stack(
        tmp_path / "fence",
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        journal_url=fenced_journal_url,
        front={USW2: held_usw2},
        start_daemon=False,
    )
    (proxy,) = proxies
    held = proxy.add(Fault.stall(requests("PUT", r"/manifests/"), HELD_SECONDS))
    journal = JournalReader(fenced_journal_url)
    try:
        stack.daemon.start()
        layout = OCILayout(tmp_path / "layout")
        layout.image("f1", [LayerSpec(1, 4 * KIB)])
        push_images(layout.path, stack.source.url, [("prod/fence", "f1")])
        wait_for(
            lambda: (
                held.injected > 0
                and {(r.destination, r.state) for r in journal.jobs()}
                == {(USW2, JobState.IN_PROGRESS), (EUW1, JobState.COMPLETE)}
            ),
            timeout=STEP_SECONDS,
            what="the usw2 copy held in the daemon, the euw1 one done",
        )
        [daemon_claim] = [r for r in journal.jobs() if r.destination == USW2]
        assert daemon_claim.claimed_by is not None
        taken = requeue_and_claim(fenced_journal_url, daemon_claim.claimed_by)
        lost = stack.daemon.wait_log("job_claim_lost", timeout=STEP_SECONDS)
        assert [r.state for r in journal.jobs() if r.id == taken.id] == [JobState.IN_PROGRESS]
        peer_completes(fenced_journal_url, taken)
    finally:
        stack.stop()
    [row] = [r for r in journal.jobs() if r.destination == USW2]
    assert row.state is JobState.COMPLETE
    assert row.claimed_by == PEER
    assert lost["job"] == row.id
    assert lost["step"] == "complete"
    assert [line["job"] for line in stack.daemon.events("job_complete")] == [
        r.id for r in journal.jobs() if r.destination == EUW1
    ]
