"""Fair claims: a source's backlog does not keep another source's new push out of the journal.

One destination (docker-registry) with `per_registry = 2`; source `bulk` behind a fault proxy
that holds each request for half a second (so its jobs take a second or more each), with 200
jobs queued (one image under 200 tags, 200 events); then a push from source `fresh`. The
journal's claim order is oldest due first within a source, but by turns between sources:
`fresh`'s push must be replicated within a bound close to its idle figure, not after the
backlog.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import envelope, manifest_present, publish, push_images, wait_for
from tests.support.fault_proxy import Fault, requests
from tests.support.images import LayerSpec
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.registry_fixtures import RegistryFactory
from tests.support.two_sources import TwoSources, two_sources

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PER_REGISTRY = 2
BACKLOG = 200
# Each request of a backlog job to its source is held this long: the backlog takes over
# BACKLOG / PER_REGISTRY seconds (100 s) to drain, a fair claim lets the new push in after about
# one job.
BULK_JOB_SECONDS = 0.5
# What a fair claim costs the new push at most: a backlog job to end (a slot to free) and the
# runner's next claim, with a loaded machine's margin.
FAIR_MARGIN_SECONDS = 5.0
# An idle push is replicated in about a second; generous for a loaded machine.
IDLE_WITHIN_SECONDS = 15.0
# How long the backlog's 200 events take to be taken in, generous for a loaded machine.
STARTED_WITHIN_SECONDS = 30.0


def fresh_replicated_after(setup: TwoSources, give_up: float) -> float:
    """Push a new image to `fresh`, announce it; seconds until it is at the destination
    (`give_up` if not by then)."""
    tag = f"fresh-{setup.pushes.get('fresh', 0) + 1}"
    setup.push("fresh", "fresh/app", tag)
    return setup.replicated_within("fresh/app", tag, give_up)


def accepted(setup: TwoSources, source: str) -> list[dict[str, object]]:
    """The daemon's event_accepted log lines of `source`."""
    return [e for e in setup.daemon.events("event_accepted") if e.get("source") == source]


def queue_backlog(setup: TwoSources) -> None:
    """One image at `bulk` under BACKLOG tags, an event for each."""
    image = setup.layout.image("bulk", [LayerSpec(1, 4096)], label="bulk")
    push_images(setup.layout.path, setup.upstream.url, [("bulk/app", "bulk")])
    base = f"{setup.upstream.url}/v2/bulk/app/manifests"
    with httpx.Client() as http:
        got = http.get(f"{base}/bulk", headers={"Accept": image.media_type})
        got.raise_for_status()
        for n in range(BACKLOG):
            put = http.put(
                f"{base}/b{n}", content=got.content, headers={"Content-Type": image.media_type}
            )
            put.raise_for_status()
    for n in range(BACKLOG):
        publish(
            setup.broker.port,
            "registry/bulk/events",
            envelope("bulk/app", image.digest, tag=f"b{n}"),
        )


@pytest.fixture
def setup(
    registry_factory: RegistryFactory, mosquitto: Mosquitto, tmp_path: Path
) -> Iterator[TwoSources]:
    """The daemon replicating `bulk` (its requests held) and `fresh` to `dst`."""
    held = Fault.stall(requests(path_pattern="^/v2/bulk/"), BULK_JOB_SECONDS, times=None)
    with two_sources(
        registry_factory,
        mosquitto,
        tmp_path,
        held="bulk",
        direct="fresh",
        faults=[held],
        per_registry=PER_REGISTRY,
    ) as started:
        yield started


class TestClaimFairness:
    """The journal's claims take turns between sources."""

    def test_new_push_beside_a_backlog_of_another_source(self, setup: TwoSources) -> None:
        """With 200 jobs of one source queued for the destination, a push from another source
        is replicated within a few seconds of its idle figure, long before the backlog ends."""
        idle = fresh_replicated_after(setup, IDLE_WITHIN_SECONDS)
        assert idle < IDLE_WITHIN_SECONDS, setup.daemon.log_tail()
        queue_backlog(setup)
        # The whole backlog in the journal first (its events taken in), so the new push is
        # timed at the claims, not behind 200 events in the broker's queue.
        wait_for(
            lambda: len(accepted(setup, "bulk")) >= BACKLOG,
            timeout=STARTED_WITHIN_SECONDS,
            what="the backlog's events to be taken in",
        )
        assert setup.proxy.faults_injected >= PER_REGISTRY, "the backlog is being worked"
        give_up = idle + FAIR_MARGIN_SECONDS + IDLE_WITHIN_SECONDS
        loaded = fresh_replicated_after(setup, give_up)
        done = sum(
            manifest_present(setup.dst.url, "bulk/app", f"b{n}") for n in range(0, BACKLOG, 10)
        )
        print(f"idle {idle:.2f} s; beside a {BACKLOG}-job backlog {loaded:.2f} s")
        assert done < BACKLOG // 10, "the backlog was still being worked through"
        assert loaded <= idle + FAIR_MARGIN_SECONDS, (
            f"idle {idle:.2f} s, beside the backlog {loaded:.2f} s\n{setup.daemon.log_tail()}"
        )
