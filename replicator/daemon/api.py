"""The daemon's HTTP API: /healthz, /readyz, /metrics, /v1/replication-status, /v1/sources."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from replicator.config.loading import Config
from replicator.daemon.http_messages import Request, Response, Route
from replicator.daemon.http_server import HttpServer
from replicator.daemon.metrics import Metrics
from replicator.engine.pauses import sleep_until
from replicator.errors import InvalidReferenceError, ReplicatorError
from replicator.journal.status import replication_status
from replicator.journal.store import Journal
from replicator.logs import get_logger

log = get_logger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
# How often the journal's gauges (jobs per state, backlog, oldest unreplicated push) are read:
# Prometheus's default scrape interval, so a scrape sees a reading at most one interval old
# while the journal answers one query per interval, however many scrapers there are.
JOURNAL_GAUGES_SECONDS = 15.0
# After a job ends the gauges are read again, but at most this often: fresh after activity,
# and never more than one query a second whatever the job rate.
JOURNAL_GAUGES_MIN_SECONDS = 1.0
# The gauges' share of the journal at most: their queries count every job (an index scan), 181 ms
# with 1,000,000 finished jobs on PostgreSQL (bench/journal_bench.py); the journal answers one
# query at a time, so a reading each second would keep claims and events waiting 18% of it.
JOURNAL_GAUGES_MAX_SHARE = 0.05


def gauge_pause(took: float) -> float:
    """Seconds to wait after a reading of the journal's gauges that took `took` seconds, at the
    least: JOURNAL_GAUGES_MIN_SECONDS, longer when readings are slow enough that the gauges
    would take more than JOURNAL_GAUGES_MAX_SHARE of the journal's time."""
    return max(JOURNAL_GAUGES_MIN_SECONDS, took / JOURNAL_GAUGES_MAX_SHARE - took)


class Served(Protocol):
    """What the API reads of the daemon it serves."""

    @property
    def config(self) -> Config: ...

    @property
    def journal(self) -> Journal | None: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def slow_sources(self) -> list[str]: ...

    async def unready(self) -> str | None:
        """Why the daemon is not ready, or None when it is."""


def routes(daemon: Served) -> list[Route]:
    """The API's routes, bound to a daemon."""

    async def healthz(_: Request) -> Response:
        return Response.text(200, "ok")

    async def readyz(_: Request) -> Response:
        reason = await daemon.unready()
        if reason is not None:
            return Response.text(503, f"not ready: {reason}")
        return Response.text(200, "ready")

    async def metrics(_: Request) -> Response:
        # From memory: the journal's gauges are refreshed by `refresh_journal_gauges`.
        return Response(200, daemon.metrics.render(), (("content-type", PROMETHEUS_TEXT),))

    async def status(request: Request) -> Response:
        repository = request.query.get("repository")
        digest = request.query.get("imageDigest")
        tag = request.query.get("imageTag")
        if not repository or not (digest or tag):
            return Response.json(400, {"error": "give repository and imageDigest or imageTag"})
        if daemon.journal is None:
            return Response.json(503, {"error": "journal not open"})
        try:
            document = await replication_status(
                daemon.config.registries,
                daemon.journal,
                source=request.query.get("source"),
                repository=repository,
                digest=digest,
                tag=tag,
            )
        except (InvalidReferenceError, ReplicatorError) as exc:
            return Response.json(400, {"error": str(exc)})
        return Response.json(200, document)

    async def sources(_: Request) -> Response:
        # Source hosts whose blob reads are cut below workers.transfer_floor_rate repeatedly.
        return Response.json(200, {"slowSources": daemon.slow_sources})

    return [
        Route("GET", "/healthz", healthz),
        Route("GET", "/readyz", readyz),
        Route("GET", "/metrics", metrics),
        Route("GET", "/v1/replication-status", status),
        Route("GET", "/v1/sources", sources),
    ]


async def refresh_journal_gauges(daemon: Served) -> None:
    """Read the journal's gauges into the metrics once (a failed read keeps the last ones)."""
    journal = daemon.journal
    if journal is None:
        return
    try:
        counts = {(s.value, d): n for (s, d), n in (await journal.counts()).items()}
        backlog = await journal.backlog()
        oldest = await journal.oldest_unreplicated()
        deferred, _ = await journal.deferred_waiting()
    except ReplicatorError as exc:
        log.warning("metrics_journal_unreadable", error=str(exc))
        return
    daemon.metrics.refresh_journal(counts, backlog, oldest, deferred)


async def serve_api(
    daemon: Served, stop: asyncio.Event, *, fleet_wide: Callable[[], bool] = lambda: True
) -> None:
    """Serve the API on `[http] listen` until `stop`, refreshing the journal's gauges while
    `fleet_wide` says this member counts for the fleet (the others export none, so the gauges
    summed over a fleet's members count each job once, and the journal counts once)."""
    http = daemon.config.http
    async with HttpServer(routes(daemon), host=http.host, port=http.port, name="api"):
        changed = daemon.metrics.journal_changed
        while not stop.is_set():
            started = time.monotonic()
            if fleet_wide():
                await refresh_journal_gauges(daemon)
            else:
                daemon.metrics.forget_journal()
            pause = gauge_pause(time.monotonic() - started)
            await sleep_until(max(JOURNAL_GAUGES_SECONDS, pause), stop, changed)
            changed.clear()
            await sleep_until(pause, stop)
