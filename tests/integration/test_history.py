"""The history checker (tests/support/history.py) against real servers: seeded schedules of
pushes, re-pushes, restores and deletes at the sources, with reconcile passes (the daemon's and
`replicator backfill`'s), daemon kills and destination outages, in a one-way pair (A -> B) and an
active-active pair (A <-> B); every tag must end at every registry on its source's newest write,
and no deleted manifest may come back. bench/history_bench.py runs many more seeds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.active_active import Pair
from tests.support.history import summary
from tests.support.history_run import check, describe, start
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.scenarios import record_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Short seeds for the suite: this many steps over this many tags runs in 5-12 s per seed on a
# loaded machine (a daemon kill is a restart, ~2 s; the wait for quiet is 3 s).
SCHEDULE_STEPS = 8
SCHEDULE_TAGS = 3
# One-way seed 2 found a deleted image put back untagged by a copy its delete's job overtook
# (an outage right after the delete); active-active seeds 1 and 2 write at both sides.
SEEDS = [("one-way", 2), ("active-active", 1), ("active-active", 2)]


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Pair]]:
    """A and B, the bridge and one daemon in the topology, reconcile every 2 s."""
    topology: str = request.param
    pair = start(
        topology, tmp_path_factory.mktemp(f"history-{topology}"), mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
    )  # fmt: skip
    yield topology, pair
    pair.stop()


class TestHistory:
    @pytest.mark.parametrize(("stack", "seed"), SEEDS, indirect=["stack"])
    def test_schedule_keeps_the_invariant(self, stack: tuple[str, Pair], seed: int) -> None:
        """After a seeded schedule of writes and faults, every tag at its owner and the
        registries it replicates to is its newest write, and no deleted manifest is back."""
        topology, pair = stack
        run = check(pair, seed, topology=topology, length=SCHEDULE_STEPS, tags=SCHEDULE_TAGS)
        record_figures(
            f"history_{topology}_{seed}",
            {
                "steps": len(run.steps),
                "writes": len(run.history),
                "violations": len(run.verdict.violations),
                "anomalies": run.anomalies,
                "seconds": round(run.seconds, 1),
                **summary(run.verdict.latencies),
            },
        )
        assert run.verdict.violations == [], describe(run)
