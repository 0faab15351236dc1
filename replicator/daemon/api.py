"""The daemon's HTTP API: /healthz, /readyz, /metrics, /v1/replication-status."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from replicator.daemon.http_server import HttpServer, Request, Response, Route
from replicator.errors import InvalidReferenceError, ReplicatorError
from replicator.journal.status import replication_status
from replicator.logs import get_logger

if TYPE_CHECKING:
    from replicator.daemon.service import Daemon

log = get_logger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def routes(daemon: Daemon) -> list[Route]:
    """The API's routes, bound to a daemon."""

    async def healthz(_: Request) -> Response:
        return Response.text(200, "ok")

    async def readyz(_: Request) -> Response:
        if daemon.bus is None or not daemon.bus.connected.is_set():
            return Response.text(503, "not ready: MQTT broker not connected")
        if daemon.journal is None:
            return Response.text(503, "not ready: journal not open")
        if daemon.journal_error is not None:
            return Response.text(503, f"not ready: journal not writable: {daemon.journal_error}")
        try:
            await daemon.journal.backlog()
        except ReplicatorError as exc:
            return Response.text(503, f"not ready: journal: {exc}")
        return Response.text(200, "ready")

    async def metrics(_: Request) -> Response:
        counts: dict[tuple[str, str], int] = {}
        backlog = 0
        if daemon.journal is not None:
            try:
                counts = {(str(s), d): n for (s, d), n in (await daemon.journal.counts()).items()}
                backlog = await daemon.journal.backlog()
            except ReplicatorError as exc:
                log.warning("metrics_journal_unreadable", error=str(exc))
        body = daemon.metrics.render(counts, backlog)
        return Response(200, body, (("content-type", PROMETHEUS_TEXT),))

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
                daemon.config,
                daemon.journal,
                source=request.query.get("source"),
                repository=repository,
                digest=digest,
                tag=tag,
            )
        except (InvalidReferenceError, ReplicatorError) as exc:
            return Response.json(400, {"error": str(exc)})
        return Response.json(200, document)

    return [
        Route("GET", "/healthz", healthz),
        Route("GET", "/readyz", readyz),
        Route("GET", "/metrics", metrics),
        Route("GET", "/v1/replication-status", status),
    ]


async def serve_api(daemon: Daemon, stop: asyncio.Event) -> None:
    """Serve the API on `[http] listen` until `stop`."""
    http = daemon.config.http
    async with HttpServer(routes(daemon), host=http.host, port=http.port, name="api"):
        await stop.wait()
