"""The registry webhook bridge: `POST /events/<source-name>` -> MQTT `registry/<name>/events`.

Any registry's webhook is welcome: the bridge authenticates it as the source's
[bridge.sources.<name>] says (else the bridge token), recognises its format (or takes the pinned
one), normalises it with replicator.domain.events.webhooks, publishes the result at QoS 1, and
answers 200 only after the broker's PUBACK. A delivery with nothing to replicate (blob pushes,
scans, pings) is answered 200 and counted as ignored; a body it cannot use gets a 4xx naming why.
Whenever it cannot vouch for delivery it answers 503, and the sender retries: that is how
events survive a broker outage. Retried deliveries are harmless: the journal keys jobs by
image and destination, so a second copy of an event adds no work.

SIGHUP re-reads the config and applies what a request uses (sources, formats, secrets, keys)
and the TLS certificate and key; requests already past their checks finish as they began.
[mqtt], the listen address and turning TLS on or off are bound at start: a change to them is
logged as needing a restart.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

from replicator.config.loading import Config, WebhookAuth, unauthenticated_sources
from replicator.config.reload import changed_keys, reread
from replicator.daemon.bridge_metrics import UNKNOWN, BridgeMetrics, Outcome
from replicator.daemon.bus import Bus, BusOptions
from replicator.daemon.http_admission import RESERVED_FOR_TRUSTED, Admission
from replicator.daemon.http_messages import Request, Response, Route
from replicator.daemon.http_server import HttpServer
from replicator.daemon.sd_notify import Notifier
from replicator.daemon.webhook_auth import SourceAuth, auth_table
from replicator.domain.events.distribution import DISTRIBUTION_EVENTS_MEDIA_TYPES
from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES
from replicator.domain.events.topics import topic_for_source
from replicator.domain.events.webhooks import WebhookFormat, format_named, normalise, recognise
from replicator.domain.images.refs import is_loopback_host
from replicator.errors import BusError, ConfigError, EventError
from replicator.logs import get_logger

log = get_logger(__name__)

EVENTS_PREFIX = "/events/"
ACCEPTED_CONTENT_TYPES = frozenset(
    {
        *DISTRIBUTION_EVENTS_MEDIA_TYPES,
        "application/json",
        "application/cloudevents+json",  # Harbor's CloudEvents format
        "application/x-www-form-urlencoded",  # GitHub's alternative webhook content type
    }
)
# What a 503 suggests to clients that honour Retry-After (EventBridge does; distribution
# retries on its own backoff schedule regardless).
RETRY_AFTER_SECONDS = 1
_UNAUTHORIZED_CHALLENGE = ("www-authenticate", 'Bearer realm="replicator-bridge"')
# Bound when the bridge starts (its broker connection, its listening socket), so a reload
# cannot apply them.
RESTART_KEYS = ("mqtt", "bridge.listen", "bridge.client_ca")
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """What the bridge needs to take one source's webhooks."""

    auth: SourceAuth
    format: WebhookFormat | None
    location: tuple[str, str]
    host: str | None = None  # the registry's host[:port], which a body naming a host must match


def source_settings(config: Config) -> dict[str, SourceSettings]:
    """Every configured registry's settings; ConfigError when a source's keys are unusable."""
    auths = auth_table(config)
    settings: dict[str, SourceSettings] = {}
    for name, registry in config.registries.items():
        source = config.bridge.sources.get(name)
        pinned = None if source is None else format_named(source.format)
        settings[name] = SourceSettings(
            auths[name], pinned, (registry.account, registry.region), registry.host
        )
    token = config.bridge.token
    if token is not None:
        bearer = SourceAuth(WebhookAuth.BEARER, token.get_secret_value().encode())
        settings[_DEFAULT] = SourceSettings(bearer, None, ("", ""))
    return settings


# The key of the bridge token's check in the settings: "" is never a registry name, so no
# path reaches it as a source.
_DEFAULT = ""


class Bridge:
    """The HTTP handlers of the bridge, over a publish-only Bus."""

    def __init__(
        self, *, bus: Bus, sources: Mapping[str, SourceSettings], events_topic: str
    ) -> None:
        self.bus = bus
        self.events_topic = events_topic
        self.metrics = BridgeMetrics(bus.connected.is_set)
        self.configure(sources)

    def configure(self, sources: Mapping[str, SourceSettings]) -> None:
        """Accept these sources, with their checks and formats, from now on."""
        self.sources = dict(sources)

    def routes(self) -> list[Route]:
        """The bridge's routes for an HttpServer."""
        return [
            Route(
                "POST",
                EVENTS_PREFIX,
                self.post_events,
                admit=self.admit_events,
                trusts=self.authenticated_head,
            ),
            Route("GET", "/healthz", self.healthz),
            Route("GET", "/metrics", self.metrics_page),
        ]

    async def healthz(self, request: Request) -> Response:
        """200 while the process runs; says whether the broker is connected."""
        return Response.json(200, {"status": "ok", "broker_connected": self.bus.connected.is_set()})

    async def metrics_page(self, request: Request) -> Response:
        """The Prometheus exposition of the bridge's metrics."""
        return Response(200, self.metrics.render(), (("content-type", PROMETHEUS_TYPE),))

    def admit_events(self, head: Request) -> Response | None:
        """The source and its credentials checked from the request's head, before its body is
        read: who has no token cannot make the bridge read a megabyte."""
        _, refused = self._authenticate(head, body_read=False)
        return refused

    def authenticated_head(self, head: Request) -> bool:
        """Whether a webhook's head carries its source's secret (checked as far as the head
        allows: an HMAC signature only by its header), so it may use the server's reserved
        places; a source without auth is not authenticated."""
        source = self.sources.get(head.path[len(EVENTS_PREFIX) :])
        auth = source.auth if source is not None else None
        if auth is None or auth.method is WebhookAuth.NONE:
            return False
        return auth.head_refusal(head) is None

    def _authenticate(
        self, request: Request, *, body_read: bool
    ) -> tuple[SourceSettings | None, Response | None]:
        """The source of a webhook, or the response refusing it (unknown source, bad auth)."""
        name = request.path[len(EVENTS_PREFIX) :]
        source = self.sources.get(name)

        def refusal(auth: SourceAuth) -> str | None:
            return auth.refusal(request) if body_read else auth.head_refusal(request)

        if source is None and _DEFAULT in self.sources:
            # With a bridge token, who lacks it learns nothing of which sources exist.
            problem = refusal(self.sources[_DEFAULT].auth)
            if problem is not None:
                self.metrics.count(UNKNOWN, UNKNOWN, Outcome.UNAUTHORIZED)
                return None, Response.text(401, problem, _UNAUTHORIZED_CHALLENGE)
        if source is None or name == _DEFAULT:
            log.info("bridge_unknown_source", source=name[:80])
            self.metrics.count(UNKNOWN, UNKNOWN, Outcome.UNKNOWN_SOURCE)
            return None, Response.text(404, f"{name[:80]!r} is not a configured source registry")
        problem = refusal(source.auth)
        if problem is not None:
            log.info("bridge_unauthorized", source=name, problem=problem)
            self.metrics.count(name, UNKNOWN, Outcome.UNAUTHORIZED)
            return None, Response.text(401, problem, _UNAUTHORIZED_CHALLENGE)
        return source, None

    async def post_events(self, request: Request) -> Response:
        """Authenticate, normalise, publish; 200 only once the broker has the event."""
        name = request.path[len(EVENTS_PREFIX) :]
        source, refused = self._authenticate(request, body_read=True)
        if refused is not None:
            return refused
        assert source is not None, "_authenticate gives a source or a refusal"
        content_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
        if content_type not in ACCEPTED_CONTENT_TYPES:
            self.metrics.count(name, UNKNOWN, Outcome.REJECTED)
            return Response.text(
                415,
                f"send JSON ({', '.join(sorted(ACCEPTED_CONTENT_TYPES))}), not {content_type!r}",
            )
        try:
            webhook = normalise(
                request.body,
                request.headers,
                source=name,
                location=source.location,
                pinned=source.format,
                host=source.host,
            )
        except EventError as exc:
            format_name = source.format.name if source.format else _guess(request)
            log.info("bridge_malformed", source=name, format=format_name, reason=exc.reason,
                     problem=str(exc))  # fmt: skip
            self.metrics.count(name, format_name, Outcome.REJECTED)
            return Response.text(400, f"{exc.reason}: {exc}")
        if not webhook.events:
            log.debug(
                "bridge_ignored", source=name, format=webhook.format.name, reasons=webhook.ignored
            )
            self.metrics.count(name, webhook.format.name, Outcome.IGNORED)
            return Response.json(200, {"published": False, "ignored": list(webhook.ignored)})
        # A distribution envelope is already what the daemon reads: it goes as sent.
        payload = request.body if webhook.format.verbatim else webhook.envelope()
        started = time.monotonic()
        try:
            await self.bus.publish(topic_for_source(self.events_topic, name), payload)
        except BusError as exc:
            log.warning("bridge_broker_unavailable", source=name, error=str(exc))
            self.metrics.count(name, webhook.format.name, Outcome.UNAVAILABLE)
            return Response.text(
                503,
                "the message bus is unavailable; retry",
                ("retry-after", str(RETRY_AFTER_SECONDS)),
            )
        seconds = time.monotonic() - started
        self.metrics.publish_duration.observe(seconds)
        self.metrics.count(name, webhook.format.name, Outcome.PUBLISHED)
        log.debug(
            "bridge_published",
            source=name,
            format=webhook.format.name,
            events=len(webhook.events),
            bytes=len(payload),
            seconds=round(seconds, 4),
        )
        return Response.json(200, {"published": True, "events": len(webhook.events)})


def _guess(request: Request) -> str:
    """The format label of a rejected body, when it can still be told."""
    try:
        document = json.loads(request.body)
    except (ValueError, RecursionError):
        document = None
    found = recognise(request.headers, document)
    return found.name if found is not None else UNKNOWN


def server_tls(config: Config) -> ssl.SSLContext | None:
    """The listener's TLS context from [bridge] tls_cert, tls_key and client_ca, or None."""
    bridge = config.bridge
    if bridge.tls_cert is None or bridge.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_tls(context, config)
    if bridge.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_tls(context: ssl.SSLContext, config: Config) -> None:
    """(Re)load the certificate, key and client CA into `context`: later handshakes use them."""
    bridge = config.bridge
    assert bridge.tls_cert is not None
    assert bridge.tls_key is not None
    try:
        context.load_cert_chain(bridge.tls_cert, bridge.tls_key)
        if bridge.client_ca is not None:
            context.load_verify_locations(cafile=bridge.client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the bridge's TLS files: {exc}", field="bridge.tls_cert"
        ) from exc


def reload_bridge(
    bridge: Bridge,
    started: Config,
    *,
    listen_given: bool = False,
    tls: ssl.SSLContext | None = None,
) -> None:
    """SIGHUP: apply the config file's sources, secrets and TLS files to `bridge`, or keep the
    old ones when the file is invalid; warn about changes to what is bound at start."""
    fresh = reread(started)
    if fresh is None:
        return
    try:
        settings = source_settings(fresh)
        if tls is not None and fresh.bridge.tls_cert is not None:
            load_tls(tls, fresh)
    except ConfigError as exc:
        log.error("config_reload_refused", error=str(exc), field=exc.field)  # noqa: TRY400 - the message is the point
        return
    bridge.configure(settings)
    fixed = [key for key in RESTART_KEYS if not (listen_given and key == "bridge.listen")]
    restart = changed_keys(started, fresh, fixed)
    if (tls is None) != (fresh.bridge.tls_cert is None):
        restart.append("bridge.tls_cert")
    if restart:
        log.warning("config_restart_required", keys=restart)
    log.info(
        "config_reloaded",
        path=str(fresh.path),
        sources=sorted(name for name in bridge.sources if name != _DEFAULT),
        # Not "token_required": the log redacts keys that look like secrets.
        unauthenticated=unauthenticated_sources(fresh),
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
    _check_exposure(config, host)
    notifier = Notifier.from_environment()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if own_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    async with Bus(bridge_bus_options(config)) as bus:
        bridge = Bridge(
            bus=bus, sources=source_settings(config), events_topic=config.mqtt.events_topic
        )
        tls = server_tls(config)
        if own_signals:
            loop.add_signal_handler(
                signal.SIGHUP,
                lambda: reload_bridge(bridge, config, listen_given=bool(listen), tls=tls),
            )
        async with (
            HttpServer(
                bridge.routes(),
                host=host,
                port=port,
                max_body=MAX_PAYLOAD_BYTES,
                name="bridge",
                tls=tls,
                # Authenticated senders keep places of their own under a flood.
                admission=Admission(reserved=RESERVED_FOR_TRUSTED),
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


def _check_exposure(config: Config, host: str) -> None:
    """Refuse to take unauthenticated webhooks off loopback (`--listen` bypasses the config's
    own check); warn about them on loopback."""
    open_sources = unauthenticated_sources(config)
    if not open_sources:
        return
    if not is_loopback_host(host if ":" not in host else f"[{host}]"):
        raise ConfigError(
            f"webhooks of {', '.join(open_sources)} would be accepted without authentication "
            f"on {host}; configure [bridge.sources.<name>] auth or bridge.token_file",
            field="bridge.sources",
        )
    log.warning("bridge_sources_unauthenticated", sources=open_sources, host=host)
