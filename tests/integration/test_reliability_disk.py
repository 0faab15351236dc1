"""Reliability when the journal's disk fills up: stop taking events, say so, recover, lose nothing.

The journal lives on a small tmpfs (mounting needs root; the test skips with the reason when
the kernel refuses). A filler file takes the last free byte while the daemon runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.domain.jobs import JobState
from tests.support.daemon import DESTINATIONS, DaemonProcess, start_stack, wait_for
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.scenarios import (
    SourcePusher,
    TinyImage,
    fill_file_system,
    integrity_check,
    job_states,
    missing_at,
    publish_pushes,
    push_and_publish,
    record_figures,
    tiny_images,
    tmpfs,
    wait_jobs_finished,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Room for the journal of a short run and its WAL, small enough to fill in a moment.
JOURNAL_FS_SIZE = "4m"
BEFORE = 5
# Images pushed while the disk is full: published one by one until the journal refuses one
# (SQLite may still fit a few in pages it already holds), the rest queue at the broker.
DURING = 20
AFTER = 5
# Small bursts over two healthy destinations finish in seconds; generous for a loaded machine.
FINISH_SECONDS = 60.0
# The daemon notices a refused write at the next message: well under a second.
NOTICE_SECONDS = 15.0
# How long to wait for a refusal after each event published on a full disk.
REFUSAL_SECONDS = 1.0
# How long the test watches the stalled daemon take nothing.
STALLED_SECONDS = 3.0


@pytest.fixture
def journal_fs(tmp_path: Path) -> Iterator[Path]:
    """A JOURNAL_FS_SIZE tmpfs for the journal, unmounted after the test."""
    try:
        with tmpfs(tmp_path / "journal-fs", JOURNAL_FS_SIZE) as folder:
            yield folder
    except PermissionError as exc:
        pytest.skip(f"a size-limited file system is needed for the journal: {exc}")


def total_jobs(database: Path) -> int:
    """How many jobs the journal holds."""
    return sum(job_states(database).values())


def fill_and_publish_until_refused(
    filler: Path, daemon: DaemonProcess, broker_port: int, images: list[TinyImage]
) -> int:
    """Fill the file system, then publish the images' events one by one until the daemon
    says the journal refused one (the rest are published too); the filler's size."""
    filled = fill_file_system(filler)
    for number, image in enumerate(images):
        publish_pushes(broker_port, [image])
        with contextlib.suppress(AssertionError):
            wait_for(
                lambda: bool(daemon.events("journal_unwritable")),
                timeout=REFUSAL_SECONDS,
                what="journal_unwritable",
            )
            publish_pushes(broker_port, images[number + 1 :])
            return filled
    raise AssertionError(f"{len(images)} events recorded on a full disk:\n{daemon.log_tail()}")


def test_full_journal_disk_stops_intake_says_so_and_recovers(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    journal_fs: Path,
    tmp_path: Path,
) -> None:
    """With the journal's file system full the daemon stays up, logs journal_unwritable with
    the error, answers /readyz 503, records and acknowledges nothing more; once space returns
    it logs journal_writable, is ready again, and every image pushed replicates once."""
    database = journal_fs / "journal.db"
    stack = start_stack(
        tmp_path / "stack",
        mosquitto_factory(),
        lambda _url: registry_factory(),
        notifications=False,
        journal_url=f"sqlite:///{database}",
    )
    try:
        daemon, broker_port = stack.daemon, stack.broker.port
        before = tiny_images(BEFORE, repository="prod/disk", prefix="before", seed=21)
        during = tiny_images(DURING, repository="prod/disk", prefix="during", seed=22)
        after = tiny_images(AFTER, repository="prod/disk", prefix="after", seed=23)
        push_and_publish(stack.source.url, broker_port, before)
        wait_jobs_finished(database, BEFORE * len(DESTINATIONS), timeout=FINISH_SECONDS)
        with SourcePusher(stack.source.url) as pusher:
            for image in [*during, *after]:
                pusher.push(image)

        filler = journal_fs / "filler"
        filled = fill_and_publish_until_refused(filler, daemon, broker_port, during)
        refused = daemon.events("journal_unwritable")[0]
        assert "full" in refused["error"], refused
        wait_for(lambda: daemon.readyz() == 503, timeout=NOTICE_SECONDS, what="/readyz 503")
        assert "journal" in daemon.get("/readyz").text
        stalled_at = total_jobs(database)
        publish_pushes(broker_port, after)
        time.sleep(STALLED_SECONDS)
        assert daemon.running, daemon.log_tail()
        assert total_jobs(database) == stalled_at, "the daemon took events it could not record"

        space_back = time.monotonic()
        filler.unlink()
        daemon.wait_log("journal_writable", timeout=NOTICE_SECONDS)
        wait_for(lambda: daemon.readyz() == 200, timeout=NOTICE_SECONDS, what="/readyz 200")
        recovered = time.monotonic() - space_back
        images = [*before, *during, *after]
        states = wait_jobs_finished(
            database, len(images) * len(DESTINATIONS), timeout=FINISH_SECONDS
        )
        assert states == {JobState.COMPLETE.value: len(images) * len(DESTINATIONS)}, states
        for name in DESTINATIONS:
            assert missing_at(stack.registries[name].url, images) == [], name
        assert integrity_check(database) == "ok"
    finally:
        stack.stop()
    record_figures(
        "journal_disk_full",
        {
            "journal_fs": f"tmpfs size={JOURNAL_FS_SIZE}",
            "filler_bytes": filled,
            "jobs_recorded_before_refusal": stalled_at,
            "images_pushed_while_full": DURING + AFTER,
            "seconds_to_ready_after_space_returned": round(recovered, 2),
            "images_replicated": len(images),
            "jobs_complete": states[JobState.COMPLETE.value],
            "integrity_check": "ok",
            "lost": 0,
        },
    )
