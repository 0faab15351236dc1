"""Reconcile: the daemon runs the backfill scan every `[reconcile] interval` seconds, so an image
whose event was lost still reaches its destinations (one pass: scan/reconcile.py). Its jobs and
repairs go to the daemon's runner, within its limits; its requests go through the daemon's client
pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

from replicator.config.loading import Config
from replicator.domain.routing import Site
from replicator.engine.pauses import sleep_until
from replicator.engine.runner import JobRunner
from replicator.errors import ReplicatorError
from replicator.journal.store import Journal
from replicator.logs import get_logger
from replicator.registry.pool import ClientPool
from replicator.scan.reconcile import reconcile_once

log = get_logger(__name__)

# How often reconcile looks at its config again while turned off (a SIGHUP may turn it on).
RECONCILE_IDLE_CHECK_SECONDS = 5.0


class Reconciled(Protocol):
    """What reconcile reads of the daemon, afresh each pass (a reload replaces the config)."""

    @property
    def config(self) -> Config: ...

    @property
    def sites(self) -> Mapping[str, Site]: ...

    @property
    def journal(self) -> Journal | None: ...

    @property
    def runner(self) -> JobRunner | None: ...


async def reconcile_forever(
    daemon: Reconciled,
    pool: ClientPool,
    stop: asyncio.Event,
    *,
    leading: Callable[[], bool] = lambda: True,
    soon: asyncio.Event | None = None,
) -> None:
    """Every `[reconcile] interval` seconds (read again each time, so a reload applies; 0 = off)
    run one reconcile pass, the first one an interval after the start (a fleet restarting its
    members one by one does not scan the registries once per member), skipped while `leading`
    says another member of the fleet reconciles. `soon` set (the broker lost the events'
    session) brings the next pass forward to now. Returns when `stop` is set."""
    while not stop.is_set():
        interval = daemon.config.reconcile.interval
        wait = RECONCILE_IDLE_CHECK_SECONDS if interval <= 0 else interval
        await _pause(wait, stop, soon)
        journal, runner = daemon.journal, daemon.runner
        if stop.is_set() or daemon.config.reconcile.interval <= 0 or not leading():
            continue
        if journal is None or runner is None:
            continue
        try:
            await reconcile_once(daemon.config, daemon.sites, journal, pool=pool, runner=runner)
        except ReplicatorError as exc:
            log.warning("reconcile_failed", code=exc.code, error=str(exc))


async def _pause(seconds: float, stop: asyncio.Event, soon: asyncio.Event | None) -> None:
    """Wait `seconds`, or less when `stop` or `soon` is set (`soon` is then cleared)."""
    await sleep_until(seconds, *([stop] if soon is None else [stop, soon]))
    if soon is not None and soon.is_set():
        soon.clear()
        log.info("reconcile_brought_forward", reason="the broker lost the events' session")
