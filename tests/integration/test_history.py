"""The history checker (tests/support/history.py) against real servers: seeded schedules of
pushes, re-pushes, deletes and pauses run at the sources of a one-way pair (A -> B) and of an
active-active pair (A <-> B), reconcile passes running every second, delete replication on; every
tag must end at every registry on its source's newest write."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.active_active import A, B, Pair, start_pair
from tests.support.history import Kind, Step, Write, schedule, violations
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.scenarios import record_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Short seeds for the suite: a schedule of this many steps over this many tags runs in a few
# seconds; longer runs (more seeds, longer schedules) are for a bench.
SCHEDULE_STEPS = 14
SCHEDULE_TAGS = 3
SEEDS = (1, 2)
# Reconcile passes run between the writes, as the daemon's default would in an outage's wake.
RECONCILE_INTERVAL_SECONDS = 1.0


def run_schedule(pair: Pair, steps: list[Step]) -> list[Write]:
    """Make the schedule's writes, in order; the history of what was written."""
    history: list[Write] = []
    for step in steps:
        if step.kind is Kind.PAUSE:
            time.sleep(step.seconds)
        elif step.kind is Kind.PUSH:
            digest = pair.push(step.side, step.repository, step.tag)
            history.append(Write(step.side, step.repository, step.tag, digest))
        else:
            named = pair.digest(step.side, step.repository, step.tag)
            if named is not None:  # a delete of a tag not there is no write
                pair.delete(step.side, step.repository, named)
                history.append(Write(step.side, step.repository, step.tag, None))
    return history


def check(pair: Pair, seed: int, *, owners: tuple[str, ...], topology: str) -> None:
    """Run the seed's schedule, wait until the daemon is quiet, check every tag at A and B."""
    repository = f"history/{topology}-{seed}"
    steps = schedule(
        seed, length=SCHEDULE_STEPS, repository=repository, tags=SCHEDULE_TAGS, owners=owners
    )
    started = time.monotonic()
    history = run_schedule(pair, steps)
    pair.wait_quiet()
    observed = {
        (side, write.repository, write.tag): pair.digest(side, write.repository, write.tag)
        for write in history
        for side in (A, B)
    }
    found = violations(history, observed, (A, B))
    record_figures(
        f"history_{topology}_{seed}",
        {
            "steps": len(steps),
            "writes": len(history),
            "deletes": sum(1 for w in history if w.digest is None),
            "violations": len(found),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    assert found == [], f"seed {seed}: {found}; history {history}"


@pytest.fixture(scope="module")
def one_way(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    """A -> B, delete replication on, reconcile every second."""
    started = start_pair(
        tmp_path_factory.mktemp("history-one-way"),
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        reconcile_interval=RECONCILE_INTERVAL_SECONDS,
        one_way=True,
    )
    yield started
    started.stop()


@pytest.fixture(scope="module")
def active_active(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    """A <-> B, delete replication on both ways, reconcile every second."""
    started = start_pair(
        tmp_path_factory.mktemp("history-active-active"),
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        reconcile_interval=RECONCILE_INTERVAL_SECONDS,
    )
    yield started
    started.stop()


class TestHistory:
    @pytest.mark.parametrize("seed", SEEDS)
    def test_one_way_schedule_keeps_the_invariant(self, one_way: Pair, seed: int) -> None:
        """A -> B: after a seeded schedule of writes at A, every tag at A and B is A's newest
        write of it (the image last pushed, or absent after a delete)."""
        check(one_way, seed, owners=(A,), topology="one-way")

    @pytest.mark.parametrize("seed", SEEDS)
    def test_active_active_schedule_keeps_the_invariant(
        self, active_active: Pair, seed: int
    ) -> None:
        """A <-> B, tags owned by either side: after a seeded schedule every tag at both sides
        is its owner's newest write (no echo ping-pong, no delete undone, no push undone)."""
        check(active_active, seed, owners=(A, B), topology="active-active")
