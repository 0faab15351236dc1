"""Repairs run within the job runner's limits, against real registries.

A repair copies again an image whose job the journal holds COMPLETE but which its destination
lost. A reconcile pass that finds such images while the runner copies new pushes must keep
`[workers] concurrency` jobs at once in all and `per_registry` at one destination: the repairs
count against both. Each destination is a fresh docker-registry (its storage "lost") behind a
fault proxy that holds every manifest PUT STALL_SECONDS, so a job's PUT is in flight at least
that long and two jobs working at once at a destination show as overlapping PUTs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from replicator.config.loading import load_config
from replicator.config.sites import sites_of
from replicator.domain.events.echoes import REPLICA_USER_AGENT
from replicator.domain.jobs import JobState
from replicator.engine.copier import Copier
from replicator.engine.runner import JobRunner
from replicator.journal.claimers import open_journal
from replicator.registry.pool import ClientPool
from replicator.scan.backfill_run import run_backfill
from replicator.scan.reconcile import reconcile_once
from replicator.scan.scanning import ScanOptions
from tests.support import skopeo
from tests.support.daemon import EUW1, USE1, USW2, DaemonSettings, topology, write_config
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import LayerSpec, OCILayout
from tests.support.registry_fixtures import RegistryFactory
from tests.support.scenarios import record_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONCURRENCY = 2
PER_REGISTRY = 1
# Each manifest PUT at a destination is held this long before it reaches the registry. A job
# puts its manifest last, and a job waiting for a destination's slot starts no request before
# the slot's holder has its PUT answered, so within the limits two PUTs at one destination
# never start closer than this; beyond them, two jobs copying small images at once put their
# manifests well within it, whatever the machine's load.
STALL_SECONDS = 1.0
# Images the destinations lose (repairs) and images pushed afterwards (the runner's jobs): each
# reaches both destinations, so a pass has 2 * (LOST + NEW) jobs.
LOST = ("v1", "v2", "v3")
NEW = ("v4", "v5")
REPOSITORY = "prod/app"
# A generous bound for the pass and its jobs: about (LOST + NEW) * STALL_SECONDS per destination.
DONE_WITHIN_SECONDS = 60.0
POLL_SECONDS = 0.1


@dataclass
class Place:
    """A destination as the second pass sees it: a fresh registry behind a stalling proxy."""

    name: str
    proxy: FaultProxy


def peak(intervals: list[tuple[float, float]]) -> int:
    """The most of `intervals` (start, end) open at one moment (an end before a start at the
    same moment: half-open)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def manifest_puts(proxy: FaultProxy) -> list[tuple[float, float]]:
    """The stall window of every manifest PUT the proxy saw."""
    return [
        (record.at, record.at + STALL_SECONDS)
        for record in proxy.records
        if record.method == "PUT" and "/manifests/" in record.target
    ]


@pytest.fixture
def places(registry_factory: RegistryFactory) -> Iterator[dict[str, Place]]:
    """Fresh destinations behind stalling proxies; stopped afterwards."""
    found: dict[str, Place] = {}
    for name in (USW2, EUW1):
        proxy = FaultProxy(registry_factory().url)
        proxy.start()
        proxy.add(Fault.stall(requests("PUT", r"/v2/.+/manifests/.+"), STALL_SECONDS, times=10**6))
        found[name] = Place(name, proxy)
    yield found
    for place in found.values():
        place.proxy.stop()


class TestRepairLimits:
    async def test_repairs_and_runner_jobs_share_the_workers_limits(
        self, tmp_path: Path, registry_factory: RegistryFactory, places: dict[str, Place]
    ) -> None:
        """A reconcile pass repairing images both destinations lost, while the runner copies
        new pushes, has at most `per_registry` jobs working at one destination and at most
        `concurrency` in all (manifest PUTs in flight at once), and lands every image."""
        source, first_usw2, first_euw1 = (registry_factory() for _ in range(3))
        journal_url = f"sqlite:///{tmp_path / 'journal.db'}"
        settings = DaemonSettings(
            broker_port=1883, journal_url=journal_url, client_id=f"replicator-{tmp_path.name}",
            concurrency=CONCURRENCY, per_registry=PER_REGISTRY,
        )  # fmt: skip
        layout = OCILayout(tmp_path / "layout")
        digests: dict[str, str] = {}

        def push(tag: str, seed: int) -> None:
            image = layout.image(f"app-{tag}", [LayerSpec(seed=seed, size=2048)])
            skopeo.push_layout(layout.path, f"app-{tag}", f"{source.host}/{REPOSITORY}:{tag}")
            digests[tag] = image.digest

        for seed, tag in enumerate(LOST, start=1):
            push(tag, seed)
        first = write_config(
            tmp_path / "first",
            topology({USE1: source.url, USW2: first_usw2.url, EUW1: first_euw1.url}),
            settings,
        )
        report = await run_backfill(load_config(first), ScanOptions())
        assert {row.state for row in report.rows} == {JobState.COMPLETE}, report.rows
        assert len(report.rows) == 2 * len(LOST)
        # The destinations lose their storage (the config now names fresh ones); the source
        # gets new pushes, whose events were lost.
        for seed, tag in enumerate(NEW, start=len(LOST) + 1):
            push(tag, seed)
        urls = {USE1: source.url} | {name: place.proxy.url for name, place in places.items()}
        config = load_config(write_config(tmp_path / "second", topology(urls), settings))
        sites = sites_of(config)
        stop = asyncio.Event()
        async with (
            await open_journal(config.journal.url) as journal,
            ClientPool.sized_for(CONCURRENCY, user_agent=REPLICA_USER_AGENT) as pool,
        ):
            runner = JobRunner(
                journal=journal, copier=Copier(), pool=pool, settings=lambda: (config, sites)
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(runner.run(stop))
                try:
                    async with asyncio.timeout(DONE_WITHIN_SECONDS):
                        await reconcile_once(config, sites, journal, pool=pool, runner=runner)
                        while any(r.state is not JobState.COMPLETE for r in await journal.jobs()):
                            await asyncio.sleep(POLL_SECONDS)
                finally:
                    stop.set()
                    runner.wake()
            rows = await journal.jobs()
        assert len(rows) == 2 * (len(LOST) + len(NEW))
        for place in places.values():
            for tag, digest in digests.items():
                found = skopeo.digest_of(f"{place.proxy.host}/{REPOSITORY}:{tag}")
                assert found == digest, (place.name, tag)
        by_place = {name: manifest_puts(place.proxy) for name, place in places.items()}
        assert all(len(puts) == len(digests) for puts in by_place.values()), by_place
        most_at_one = {name: peak(puts) for name, puts in by_place.items()}
        most_in_all = peak([put for puts in by_place.values() for put in puts])
        record_figures(
            "repairs_within_limits",
            {"most_at_one_destination": most_at_one, "most_in_all": most_in_all},
        )
        within = max(most_at_one.values()) <= PER_REGISTRY and most_in_all <= CONCURRENCY
        assert within, f"at one destination {most_at_one}, in all {most_in_all}"
