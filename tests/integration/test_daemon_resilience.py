"""Nothing lost, nothing duplicated: the daemon killed mid-burst, the broker stopped mid-pushes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from replicator.domain.jobs import JobState
from replicator.journal import JobRow
from tests.support.daemon import (
    DESTINATIONS,
    JournalReader,
    Stack,
    manifest_digest,
    push_images,
    wait_for,
)
from tests.support.images import BuiltImage, OCILayout
from tests.support.stack_fixtures import StackFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BURST = 30
# 30 small images over two destinations finish in seconds; a restart and the distribution
# webhook retries (1 s backoff) add a few more; 90 s covers a loaded CI machine.
BURST_FINISHED_SECONDS = 90.0
# The kill lands after this many jobs completed: in the middle of the burst.
KILL_AFTER_COMPLETE = 8
# Readiness follows the broker's state within a keepalive-free TCP reset: about a second.
READINESS_SECONDS = 15.0


@pytest.fixture
def stack(stack_factory: StackFactory) -> Stack:
    """A fresh stack (own broker) per test: these tests kill and stop its parts."""
    return stack_factory()


def burst_images(folder: Path, count: int, prefix: str) -> list[BuiltImage]:
    """`count` distinct small images tagged `<prefix>0`..: a shared base layer and their own."""
    return OCILayout(folder).siblings(prefix, count, first_seed=10_000)


def assert_replicated_once(stack: Stack, rows: list[JobRow], images: list[BuiltImage]) -> None:
    """One COMPLETE job per (image, destination), and each image's digest at each destination."""
    keys = [(row.repository, row.tag, row.destination) for row in rows]
    assert len(keys) == len(set(keys)) == len(images) * len(DESTINATIONS)
    assert {row.state for row in rows} == {JobState.COMPLETE}
    for image in images:
        assert image.tag is not None
        for destination in DESTINATIONS:
            url = stack.registries[destination].url
            assert manifest_digest(url, "prod/burst", image.tag) == image.digest


def test_kill_9_mid_burst_then_restart_replicates_every_image_once(
    stack: Stack, tmp_path: Path
) -> None:
    """SIGKILL of the daemon while a burst of 30 pushes is replicated, then a restart: every
    image reaches both destinations, and there is exactly one job per image and destination."""
    images = burst_images(tmp_path / "layout", BURST, "b")
    pushing = threading.Thread(
        target=push_images,
        args=(tmp_path / "layout", stack.source.url, [("prod/burst", i.tag) for i in images]),
    )
    pushing.start()
    try:
        wait_for(
            lambda: len(stack.daemon.events("job_complete")) >= KILL_AFTER_COMPLETE,
            timeout=BURST_FINISHED_SECONDS,
            what=f"{KILL_AFTER_COMPLETE} completed jobs",
        )
        stack.daemon.kill()
        completed_before_kill = len(stack.daemon.events("job_complete"))
    finally:
        pushing.join()
    assert completed_before_kill < BURST * len(DESTINATIONS), "the kill came after the burst"
    stack.daemon.start()
    rows = JournalReader(stack.settings.journal_url).wait_finished(
        BURST * len(DESTINATIONS), timeout=BURST_FINISHED_SECONDS
    )
    assert_replicated_once(stack, rows, images)


def test_broker_outage_during_pushes_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    """Pushes before, during and after a mosquitto outage all replicate: the bridge answers
    503 while the broker is away, docker-registry retries its notifications, and /readyz of
    the daemon is 503 until the broker is back."""
    images = burst_images(tmp_path / "layout", 15, "o")
    layout, source = tmp_path / "layout", stack.source.url
    tags = [("prod/burst", image.tag or "") for image in images]
    push_images(layout, source, tags[:5])
    stack.broker.stop()
    wait_for(lambda: stack.daemon.readyz() == 503, timeout=READINESS_SECONDS, what="503")
    push_images(layout, source, tags[5:10])
    wait_for(
        lambda: bool(stack.bridge.events("bridge_broker_unavailable")),
        timeout=READINESS_SECONDS,
        what="the bridge refusing a webhook while the broker is down",
    )
    stack.broker.start()
    wait_for(lambda: stack.daemon.readyz() == 200, timeout=READINESS_SECONDS, what="ready")
    push_images(layout, source, tags[10:])
    rows = JournalReader(stack.settings.journal_url).wait_finished(
        len(images) * len(DESTINATIONS), timeout=BURST_FINISHED_SECONDS
    )
    assert_replicated_once(stack, rows, images)
