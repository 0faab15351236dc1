"""Scans at scale: a repository's tags are scanned page by page in memory flat in their number,
and SIGTERM stops a scan within 2 s.

The source and the destination are tests/support/generated_tags.py servers (each in a process
of its own): every tag of the source's `big/app` answers one digest, the destination has none,
so `backfill --dry-run` plans a copy of each. Its peak RSS is read from /proc while it runs, for
1,000 and for 10,000 tags (two HEADs a tag keep a larger run out of a test's time; the figures for
100,000 and 1,000,000 tags, measured the same way by hand, are in RELIABILITY.md).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import (
    DaemonSettings,
    RegistrySpec,
    replicator_command,
    rule,
    write_config,
)
from tests.support.generated_tags import GeneratedTagsProcess
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL_TAGS, LARGE_TAGS = 1_000, 10_000
# Ten times the tags may cost no more than this: one page of 1,000 tags and its plans are what a
# scan holds (main held every tag, its HEAD task and its plan: ~4.4 KiB a tag, 39 MiB here).
MAX_GROWTH_MIB = 15
# Issue 23: a 1,000,000-tag source under 150 MiB.
MAX_RSS_MIB = 150
# SIGTERM stops a scan within this (issue 23).
STOP_WITHIN_SECONDS = 2.0
# A scan of this many tags runs far longer than the test waits before its SIGTERM.
ENDLESS_TAGS = 1_000_000
# SIGTERM is sent once the source has answered this many requests (the scan is in the middle of
# the repository: past its first pages and HEADs), which a loaded machine reaches within the wait.
SCANNING_REQUESTS = 500
SCAN_STARTED_WITHIN_SECONDS = 60.0
# The whole dry run of TAGS tags: two HEADs a tag on a loaded 2-core machine.
DRY_RUN_TIMEOUT_SECONDS = 120.0
KIB = 1024


def _config(folder: Path, source: str, destination: str) -> Path:
    settings = DaemonSettings(
        broker_port=free_port(),
        journal_url=f"sqlite:///{folder / 'journal.db'}",
        client_id="scan-scale",
    )
    specs = [
        RegistrySpec(
            "src", "111122223333", "us-east-1", source,
            replication={"rules": [rule([("us-west-2", "111122223333")])]},
        ),
        RegistrySpec("dst", "111122223333", "us-west-2", destination),
    ]  # fmt: skip
    return write_config(folder, specs, settings)


def _peak_rss_kib(pid: int) -> int:
    """VmHWM (the peak resident set) of a running process, in KiB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _dry_run(tmp_path: Path, tags: int) -> tuple[int, list[str]]:
    """Run `backfill --dry-run` against a source of `tags` tags and an empty destination; its
    peak RSS in KiB and its output lines."""
    source = GeneratedTagsProcess(tags, holds=True)
    destination = GeneratedTagsProcess(tags, holds=False)
    folder = tmp_path / str(tags)
    try:
        config = _config(folder, source.url, destination.url)
        out = folder / "plan.txt"
        with out.open("w") as stdout:
            process = subprocess.Popen(
                replicator_command("--config", str(config), "backfill", "--dry-run"),
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
            )
            peak = 0
            started = time.monotonic()
            while process.poll() is None and time.monotonic() - started < DRY_RUN_TIMEOUT_SECONDS:
                peak = max(peak, _peak_rss_kib(process.pid))
                time.sleep(0.05)
            if process.poll() is None:
                process.kill()
            _, stderr = process.communicate()
        seconds = time.monotonic() - started
        print(f"{tags} tags: peak RSS {peak / KIB:.0f} MiB, {seconds:.1f} s")
        assert process.returncode == 0, stderr[-2000:]
        return peak, out.read_text().splitlines()
    finally:
        source.stop()
        destination.stop()


class TestScanScale:
    """Memory flat in the number of tags; a scan stops on SIGTERM."""

    def test_dry_run_memory_flat_in_tags(self, tmp_path: Path) -> None:
        """`backfill --dry-run` plans a copy of every tag of a 10,000-tag repository with a
        peak RSS within 15 MiB of the same run over 1,000 tags, and under 150 MiB."""
        small, _ = _dry_run(tmp_path, SMALL_TAGS)
        large, lines = _dry_run(tmp_path, LARGE_TAGS)
        assert sum(1 for line in lines if line.startswith("copy")) == LARGE_TAGS, lines[-3:]
        growth = (large - small) / KIB
        assert growth < MAX_GROWTH_MIB, f"{small / KIB:.0f} -> {large / KIB:.0f} MiB"
        assert large < MAX_RSS_MIB * KIB, f"peak RSS {large / KIB:.0f} MiB"

    def test_sigterm_stops_a_scan_within_2s(self, tmp_path: Path) -> None:
        """SIGTERM to `backfill --dry-run` in the middle of a 1,000,000-tag repository ends the
        process within 2 s, reporting the scan interrupted."""
        source = GeneratedTagsProcess(ENDLESS_TAGS, holds=True)
        destination = GeneratedTagsProcess(ENDLESS_TAGS, holds=True)
        try:
            config = _config(tmp_path, source.url, destination.url)
            process = subprocess.Popen(
                replicator_command("--config", str(config), "backfill", "--dry-run"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + SCAN_STARTED_WITHIN_SECONDS
            while source.served() < SCANNING_REQUESTS and time.monotonic() < deadline:
                time.sleep(0.1)
            assert source.served() >= SCANNING_REQUESTS, "the scan is under way"
            assert process.poll() is None, "the scan is still going"
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            while process.poll() is None and time.monotonic() - signalled < STOP_WITHIN_SECONDS * 5:
                time.sleep(0.02)
            took = time.monotonic() - signalled
            if process.poll() is None:
                process.kill()
                process.wait()
            print(f"stopped {took:.2f} s after SIGTERM")
            assert took < STOP_WITHIN_SECONDS, f"{took:.1f} s"
            assert process.returncode == 1
        finally:
            source.stop()
            destination.stop()
