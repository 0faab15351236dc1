"""The registry webhook bridge: `POST /events/<source-name>` -> MQTT `registry/<name>/events`.

Registries (CNCF distribution's `notifications`) POST their event envelope here. The bridge
checks the token, the source name and that the body is an envelope, publishes the body as-is at
QoS 1, and answers 200 only after the broker's PUBACK. Whenever it cannot vouch for delivery it
answers 503, and distribution keeps the envelope and retries with backoff: that is how events
survive a broker outage. The daemon does all interpretation; the bridge stays dumb and fast.

SIGHUP re-reads the config and applies what a request uses (the source names, the token);
requests already past their checks finish as they began. [mqtt] and the listen address are
bound at start: a change to them is logged as needing a restart.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import signal
import time
from collections.abc import Collection

from replicator.config.loading import Config
from replicator.config.reload import changed_keys, reread
from replicator.daemon.bus import Bus, BusOptions
from replicator.daemon.http_server import HttpServer, Request, Response, Route
from replicator.daemon.sd_notify import Notifier
from replicator.domain.events import DISTRIBUTION_EVENTS_MEDIA_TYPE, MAX_PAYLOAD_BYTES
from replicator.domain.topics import topic_for_source
from replicator.errors import BusError
from replicator.logs import get_logger

log = get_logger(__name__)

EVENTS_PREFIX = "/events/"
ACCEPTED_CONTENT_TYPES = frozenset({DISTRIBUTION_EVENTS_MEDIA_TYPE, "application/json"})
# What a 503 suggests to clients that honour Retry-After (distribution retries on its own
# backoff schedule regardless).
RETRY_AFTER_SECONDS = 1
_UNAUTHORIZED_CHALLENGE = ("www-authenticate", 'Bearer realm="replicator-bridge"')
# Bound when the bridge starts (its broker connection, its listening socket), so a reload
# cannot apply them.
RESTART_KEYS = ("mqtt", "bridge.listen")


class Bridge:
    """The HTTP handlers of the bridge, over a publish-only Bus."""

    def __init__(
        self,
        *,
        bus: Bus,
        sources: Collection[str],
        events_topic: str,
        token: str | None = None,
    ) -> None:
        self.bus = bus
        self.events_topic = events_topic
        self.configure(sources=sources, token=token)

    def configure(self, *, sources: Collection[str], token: str | None) -> None:
        """Accept these source names and this bearer token (None: no token) from now on."""
        self.sources = frozenset(sources)
        self._token = token.encode() if token else None

    def routes(self) -> list[Route]:
        """The bridge's routes for an HttpServer."""
        return [
            Route("POST", EVENTS_PREFIX, self.post_events),
            Route("GET", "/healthz", self.healthz),
        ]

    async def healthz(self, request: Request) -> Response:
        """200 while the process runs; says whether the broker is connected."""
        return Response.json(200, {"status": "ok", "broker_connected": self.bus.connected.is_set()})

    async def post_events(self, request: Request) -> Response:
        """Check, publish, and answer 200 only once the broker has the envelope."""
        if not self._authorized(request.header("authorization")):
            log.info("bridge_unauthorized", path=request.path)
            return Response.text(401, "a valid bearer token is required", _UNAUTHORIZED_CHALLENGE)
        source = request.path[len(EVENTS_PREFIX) :]
        if source not in self.sources:
            log.info("bridge_unknown_source", source=source[:80])
            return Response.text(404, f"{source[:80]!r} is not a configured source registry")
        content_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
        if content_type not in ACCEPTED_CONTENT_TYPES:
            return Response.text(
                415,
                f"send {DISTRIBUTION_EVENTS_MEDIA_TYPE} or application/json, not {content_type!r}",
            )
        problem = envelope_problem(request.body)
        if problem is not None:
            log.info("bridge_malformed", source=source, problem=problem)
            return Response.text(400, problem)
        started = time.monotonic()
        try:
            await self.bus.publish(topic_for_source(self.events_topic, source), request.body)
        except BusError as exc:
            log.warning("bridge_broker_unavailable", source=source, error=str(exc))
            return Response.text(
                503,
                "the message bus is unavailable; retry",
                ("retry-after", str(RETRY_AFTER_SECONDS)),
            )
        log.debug(
            "bridge_published",
            source=source,
            bytes=len(request.body),
            seconds=round(time.monotonic() - started, 4),
        )
        return Response.json(200, {"published": True})

    def _authorized(self, authorization: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)


def envelope_problem(body: bytes) -> str | None:
    """Why `body` is not a distribution envelope (a JSON object with an `events` list), or None."""
    if len(body) > MAX_PAYLOAD_BYTES:
        return f"the body is larger than {MAX_PAYLOAD_BYTES} bytes"
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return "the body is not JSON"
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        return 'the body is not an event envelope: {"events": [...]}'
    return None


def token_of(config: Config) -> str | None:
    """The bearer token webhooks must present under `config`, or None."""
    return config.bridge.token.get_secret_value() if config.bridge.token is not None else None


def reload_bridge(bridge: Bridge, started: Config, *, listen_given: bool = False) -> None:
    """SIGHUP: apply the config file's sources and token to `bridge`, or keep the old ones when
    the file is invalid; warn about changes to what is bound at start (`started`'s values)."""
    fresh = reread(started)
    if fresh is None:
        return
    bridge.configure(sources=fresh.registries, token=token_of(fresh))
    fixed = [key for key in RESTART_KEYS if not (listen_given and key == "bridge.listen")]
    restart = changed_keys(started, fresh, fixed)
    if restart:
        log.warning("config_restart_required", keys=restart)
    log.info(
        "config_reloaded",
        path=str(fresh.path),
        sources=sorted(bridge.sources),
        token_required=fresh.bridge.token is not None,
    )


def bridge_bus_options(config: Config) -> BusOptions:
    """The bridge's MQTT client: its own id, no subscription, no persistent session."""
    return BusOptions.from_config(
        config.mqtt,
        client_id=f"{config.mqtt.client_id}-bridge",
        subscribe=False,
        persistent=False,
    )


async def serve(
    config: Config, *, listen: str | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run the bridge until `stop` is set; when `stop` is None, until SIGTERM/SIGINT, and
    SIGHUP reloads the config."""
    host, port = _split_listen(listen) if listen else (config.bridge.host, config.bridge.port)
    notifier = Notifier.from_environment()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if own_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    async with Bus(bridge_bus_options(config)) as bus:
        bridge = Bridge(
            bus=bus,
            sources=config.registries,
            events_topic=config.mqtt.events_topic,
            token=token_of(config),
        )
        if own_signals:
            loop.add_signal_handler(
                signal.SIGHUP, lambda: reload_bridge(bridge, config, listen_given=bool(listen))
            )
        async with (
            HttpServer(
                bridge.routes(), host=host, port=port, max_body=MAX_PAYLOAD_BYTES, name="bridge"
            ),
            asyncio.TaskGroup() as group,
        ):
            notifier.ready(f"bridge listening on {host}:{port}")
            watchdog = group.create_task(notifier.watchdog_loop(), name="watchdog")
            await stop.wait()
            notifier.stopping()
            watchdog.cancel()
    log.info("bridge_stopped")


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)
