"""This process's claimer id, and which claimers recorded in the journal are gone.

The facts come from the system here; the decision is domain.fleet.claims.liveness. A claimer's place
is the machine (its machine id: two hosts cloned from one image may share a host name, and
every host's first pid namespace has the same number) and its pid namespace (containers); its
start is the boot and the clock tick the process started at, so a pid from before a reboot
never passes for a live one.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path

from replicator.domain.fleet.claims import Claimer, Liveness, liveness, local_pids
from replicator.journal.models import JobRow
from replicator.journal.store import Journal

PROC = Path("/proc")
MACHINE_ID = Path("/etc/machine-id")
BOOT_ID = PROC / "sys" / "kernel" / "random" / "boot_id"
# Field of /proc/<pid>/stat (counting from 1) holding the process start time, in clock ticks
# since boot; the fields after the command name, which may hold spaces, start at field 3.
STARTTIME_FIELD = 22


def process_start(pid: int) -> str | None:
    """When process `pid` started, as an opaque string; None if no such process runs."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        # No /proc to read (another system): tell a running pid from a free one, nothing more.
        return _exists(pid)
    fields = stat.rpartition(")")[2].split()
    return f"{_boot()}:{fields[STARTTIME_FIELD - 3]}"


def _exists(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it runs, as another user
    return "?"


@functools.cache
def _boot() -> str:
    return _read(BOOT_ID)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""  # not on this system: the other facts still tell claimers apart


def _place() -> str:
    try:
        namespace = os.readlink(PROC / "self" / "ns" / "pid")
    except OSError:
        namespace = ""
    return f"{_read(MACHINE_ID)}:{namespace}"


@functools.cache
def this_process() -> Claimer:
    """The claimer id of this process."""
    pid = os.getpid()
    return Claimer(socket.gethostname(), _place(), pid, process_start(pid) or "?")


def claimer_liveness(claimers: Iterable[str | None]) -> Liveness:
    """Which of `claimers` still run here and which are gone (others are unknown)."""
    claimers = list(claimers)
    here = this_process()
    starts = {pid: process_start(pid) for pid in local_pids(claimers, here)}
    return liveness(claimers, here, starts)


async def resume_orphans(
    journal: Journal,
    *,
    started_before: datetime | None,
    max_deaths: int | None,
    on_set_aside: Callable[[JobRow], Awaitable[None]] | None = None,
) -> int:
    """Queue again the IN_PROGRESS jobs no live process holds; how many.

    A claimer gone from this host (killed, crashed) gives its jobs back at once; a claimer
    that still runs here keeps them; any other claimer's jobs go back once claimed before
    `started_before` (every one of them when it is None: a process alone on its journal).
    """
    known = claimer_liveness(await journal.in_progress_claimers())
    return await journal.resume_interrupted(
        started_before=started_before,
        max_deaths=max_deaths,
        dead=known.dead,
        spare=known.alive,
        on_set_aside=on_set_aside,
    )


async def open_journal(url: str) -> Journal:
    """Open the journal at `url`, claiming jobs in the name of this process."""
    return await Journal.open(url, claimer=str(this_process()))
