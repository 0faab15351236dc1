"""Reliability across crashes: the daemon killed -9 again and again, the broker restarted.

Promises checked after each scenario: every image at every destination with its digest, one
COMPLETE job per (image, destination), `PRAGMA integrity_check` ok, and every blob in each
destination's storage hashing to its digest (no partial upload became visible).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from replicator.domain.jobs import JobState
from tests.support.daemon import (
    DESTINATIONS,
    USE1,
    JournalReader,
    Stack,
    start_stack,
    wait_for,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import Fault, requests
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.scenarios import (
    SourcePusher,
    TinyImage,
    assert_one_complete_job_each,
    corrupt_blobs,
    integrity_check,
    job_states,
    missing_at,
    push_and_publish,
    record_figures,
    stored_blob_count,
    tiny_images,
    wait_jobs_finished,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The crash loop: 20 kills, at seeded random moments after each start (the first
# second of a start is Python and the journal opening, so some kills land there, the rest
# mid-copy).
KILLS = 20
SEED = 20_240_607
KILL_AFTER_SECONDS = (0.3, 2.5)
# Images pushed (and their events published) during each run of the daemon: the burst goes
# on across the whole loop, so kills land while jobs are in flight.
IMAGES_PER_RUN = 5
# A job interrupted by a kill is resumed and claimed again (one attempt each time): the
# shipped default leaves room for a job caught by several kills in a row.
MAX_ATTEMPTS = 10
FINISH_SECONDS = 120.0
# Broker restart: a burst through the registry's webhooks and the bridge; the broker goes
# away after some jobs completed and comes back after BROKER_DOWN_SECONDS.
BROKER_BURST = 40
BROKER_DOWN_AFTER_COMPLETE = 10
BROKER_DOWN_SECONDS = 3.0
# Pushes go on at this pace, so some land while the broker is away.
PUSH_INTERVAL_SECONDS = 0.1


def assert_nothing_lost(stack: Stack, images: list[TinyImage]) -> None:
    """Every image once at each destination, complete journal, sound file, clean storage."""
    rows = JournalReader(stack.settings.journal_url).jobs()
    assert_one_complete_job_each(rows, images, DESTINATIONS)
    for name in DESTINATIONS:
        assert missing_at(stack.registries[name].url, images) == [], name
        assert corrupt_blobs(stack.registries[name]) == [], name
    assert integrity_check(stack.folder / "journal.db") == "ok"


def test_twenty_kill_9_during_a_burst_lose_and_duplicate_nothing(
    registry_factory: RegistryFactory, mosquitto_factory: MosquittoFactory, tmp_path: Path
) -> None:
    """SIGKILL of the daemon at 20 seeded random moments while a burst is replicated, with a
    restart after each: every image replicated, no job duplicated, the journal passes
    PRAGMA integrity_check, and no partial blob is visible at a destination."""
    stack = start_stack(
        tmp_path / "stack",
        mosquitto_factory(),
        lambda _url: registry_factory(),
        notifications=False,
        max_attempts=MAX_ATTEMPTS,
    )
    rng = random.Random(SEED)
    database = stack.folder / "journal.db"
    images = tiny_images(KILLS * IMAGES_PER_RUN, repository="prod/crash", prefix="c", seed=SEED)
    kills_mid_copy = 0
    try:
        for run in range(KILLS):
            if run:
                stack.daemon.start(ready=False)
            started = time.monotonic()
            chunk = images[run * IMAGES_PER_RUN : (run + 1) * IMAGES_PER_RUN]
            push_and_publish(stack.source.url, stack.broker.port, chunk)
            pause = rng.uniform(*KILL_AFTER_SECONDS) - (time.monotonic() - started)
            time.sleep(max(0.0, pause))
            in_progress = job_states(database).get(JobState.IN_PROGRESS.value, 0)
            stack.daemon.kill()
            kills_mid_copy += in_progress > 0
        before_last_start = job_states(database)
        stack.daemon.start()
        states = wait_jobs_finished(
            database, len(images) * len(DESTINATIONS), timeout=FINISH_SECONDS
        )
        assert states == {JobState.COMPLETE.value: len(images) * len(DESTINATIONS)}, states
        assert_nothing_lost(stack, images)
        rows = JournalReader(stack.settings.journal_url).jobs()
    finally:
        stack.stop()
    complete_before = before_last_start.get(JobState.COMPLETE.value, 0)
    assert complete_before < len(images) * len(DESTINATIONS), "the kills came after the burst"
    assert kills_mid_copy > 0, "no kill landed while a job was in progress"
    record_figures(
        "crash_loop",
        {
            "kills": KILLS,
            "seed": SEED,
            "kills_with_jobs_in_progress": kills_mid_copy,
            "images": len(images),
            "jobs": len(rows),
            "jobs_complete_before_last_start": complete_before,
            "most_attempts_of_a_job": max(row.attempts for row in rows),
            "destination_blobs_checked": sum(
                stored_blob_count(stack.registries[name]) for name in DESTINATIONS
            ),
            "integrity_check": "ok",
            "duplicated_jobs": 0,
            "lost": 0,
        },
    )


# The crash loop with faults: kills 1.5 s apart during a burst of 100 pushes while 20%
# of the requests to every registry (source and destinations) fail, so copies take retries and
# jobs are in flight at many kills in a row.
FAULTY_KILLS = 20
FAULTY_KILL_AFTER_SECONDS = 1.5
FAULTY_BURST = 100
FAULT_SHARE = 0.20
# Each status fault is tried in turn with this share, so FAULT_SHARE of requests get one.
STATUS_FAULTS = ((500, None), (502, None), (503, None), (429, 1))
PER_RULE_SHARE = 1 - (1 - FAULT_SHARE) ** (1 / len(STATUS_FAULTS))
# Few attempts, so that a death counted as a job's failed attempt would fail good jobs within
# the loop; the faults alone almost never fail an attempt (each request is retried 5 times).
FAULTY_MAX_ATTEMPTS = 3


def test_kill_9_loop_with_faults_fails_no_good_job(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    fault_proxy_factory: Callable[[Registry], FaultProxy],
    tmp_path: Path,
) -> None:
    """20 SIGKILLs 1.5 s apart during a burst of 100 pushes, with 20% of requests to every
    registry failing (5xx, 429) and max_attempts 3: no job ends FAILED (a death is not counted
    against a job's attempts, and no job is in flight at 20 deaths in a row); every image
    replicated once."""
    proxies: list[FaultProxy] = []

    def through_proxy(registry: Registry) -> str:
        proxy = fault_proxy_factory(registry)
        for status, retry_after in STATUS_FAULTS:
            proxy.add(
                Fault.status_code(
                    status, requests(), times=None, share=PER_RULE_SHARE,
                    retry_after_seconds=retry_after,
                )
            )  # fmt: skip
        proxies.append(proxy)
        return proxy.url

    stack = start_stack(
        tmp_path / "stack",
        mosquitto_factory(),
        lambda _url: registry_factory(),
        notifications=False,
        front=dict.fromkeys((USE1, *DESTINATIONS), through_proxy),
        max_attempts=FAULTY_MAX_ATTEMPTS,
    )
    database = stack.folder / "journal.db"
    per_run = FAULTY_BURST // FAULTY_KILLS
    images = tiny_images(FAULTY_BURST, repository="prod/faulty", prefix="k", seed=SEED)
    in_flight_at_kill: list[int] = []
    try:
        for run in range(FAULTY_KILLS):
            if run:
                stack.daemon.start(ready=False)
            started = time.monotonic()
            push_and_publish(stack.source.url, stack.broker.port, images[run * per_run :][:per_run])
            time.sleep(max(0.0, FAULTY_KILL_AFTER_SECONDS - (time.monotonic() - started)))
            in_flight_at_kill.append(job_states(database).get(JobState.IN_PROGRESS.value, 0))
            stack.daemon.kill()
        stack.daemon.start()
        rows = JournalReader(stack.settings.journal_url).wait_finished(
            len(images) * len(DESTINATIONS), timeout=FINISH_SECONDS
        )
        failed = [(row.tag, row.destination, row.failure_code, row.failure_reason) for row in rows
                  if row.state is JobState.FAILED]  # fmt: skip
        assert failed == []
        assert_nothing_lost(stack, images)
    finally:
        stack.stop()
    # Enough kills landed mid-copy for deaths counted as attempts to fail jobs (a loaded
    # machine starts the daemon slowly, so fewer kills find jobs in flight).
    assert sum(1 for count in in_flight_at_kill if count) >= FAULTY_MAX_ATTEMPTS
    record_figures(
        "crash_loop_with_faults",
        {
            "kills": FAULTY_KILLS,
            "kill_after_seconds": FAULTY_KILL_AFTER_SECONDS,
            "images": len(images),
            "jobs": len(rows),
            "kills_with_jobs_in_progress": sum(1 for count in in_flight_at_kill if count),
            "faults_injected": sum(proxy.faults_injected for proxy in proxies),
            "requests_seen": sum(proxy.requests_seen for proxy in proxies),
            "most_attempts_of_a_job": max(row.attempts for row in rows),
            "most_deaths_in_a_row_of_a_job": max(row.deaths for row in rows),
            "jobs_failed": 0,
        },
    )


def push_slowly(registry: Registry, images: list[TinyImage], errors: list[BaseException]) -> None:
    """Push the images one by one at PUSH_INTERVAL_SECONDS (the registry notifies each)."""
    try:
        with SourcePusher(registry.url) as pusher:
            for image in images:
                pusher.push(image)
                time.sleep(PUSH_INTERVAL_SECONDS)
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def test_broker_restart_during_a_burst_loses_nothing(
    registry_factory: RegistryFactory, mosquitto_factory: MosquittoFactory, tmp_path: Path
) -> None:
    """Mosquitto stopped and started again while pushes go on through the registry's webhooks:
    the bridge answers 503 meanwhile, the registry retries, the daemon reconnects to its
    persistent session, and every image replicates exactly once."""

    def start_registry(notifications_url: str | None) -> Registry:
        return registry_factory(notifications_url=notifications_url)

    stack = start_stack(tmp_path / "stack", mosquitto_factory(), start_registry)
    database = stack.folder / "journal.db"
    images = tiny_images(BROKER_BURST, repository="prod/broker", prefix="m", seed=31)
    errors: list[BaseException] = []
    pusher = threading.Thread(target=push_slowly, args=(stack.source, images, errors))
    try:
        pusher.start()
        wait_for(
            lambda: (
                job_states(database).get(JobState.COMPLETE.value, 0) >= BROKER_DOWN_AFTER_COMPLETE
            ),
            timeout=FINISH_SECONDS,
            what=f"{BROKER_DOWN_AFTER_COMPLETE} completed jobs",
        )
        stack.broker.stop()
        down_at = time.monotonic()
        wait_for(lambda: stack.daemon.readyz() == 503, timeout=10.0, what="/readyz 503")
        time.sleep(max(0.0, BROKER_DOWN_SECONDS - (time.monotonic() - down_at)))
        complete_while_down = job_states(database).get(JobState.COMPLETE.value, 0)
        stack.broker.start()
        wait_for(lambda: stack.daemon.readyz() == 200, timeout=30.0, what="/readyz 200")
        pusher.join()
        assert not errors, errors
        states = wait_jobs_finished(
            database, len(images) * len(DESTINATIONS), timeout=FINISH_SECONDS
        )
        assert states == {JobState.COMPLETE.value: len(images) * len(DESTINATIONS)}, states
        assert_nothing_lost(stack, images)
        refused = len(stack.bridge.events("bridge_broker_unavailable"))
    finally:
        pusher.join()
        stack.stop()
    assert refused > 0, "no webhook reached the bridge while the broker was away"
    record_figures(
        "broker_restart",
        {
            "images": len(images),
            "broker_down_seconds": BROKER_DOWN_SECONDS,
            "jobs_complete_when_broker_came_back": complete_while_down,
            "webhooks_refused_503_by_bridge": refused,
            "jobs_complete": states[JobState.COMPLETE.value],
            "duplicated_jobs": 0,
            "lost": 0,
        },
    )
