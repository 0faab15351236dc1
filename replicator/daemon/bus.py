"""The MQTT bus (aiomqtt, MQTT v5): consume events, acknowledge them late, publish results.

No event is lost across daemon crashes or broker restarts because of three choices:

- a fixed client id with a persistent session (clean start off, a long session expiry), so the
  broker queues events published while the daemon is away;
- QoS 1 with *manual* acknowledgement: a message is PUBACKed only when the caller calls
  `ack()`, after it has journalled the message. A crash before that and the broker delivers the
  message again; the journal makes the second delivery a no-op;
- a keeper task that reconnects with capped exponential backoff whenever the connection drops.

Use:

    async with Bus(options) as bus:
        async for message in bus.messages():     # survives reconnects
            journal(message)                      # idempotent: redeliveries happen
            await bus.ack(message)

A message received on a connection that has since dropped cannot be acknowledged on the new one
(packet ids are per connection): `ack` ignores it and the broker redelivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from replicator.daemon.bus_inbox import AckHandle, BusMessage, Inbox
from replicator.daemon.bus_session import (
    SESSION_EXPIRY_SECONDS,
    SessionWatch,
    fail_without_connack,
    note_connack,
)
from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES
from replicator.domain.events.topics import source_from_topic
from replicator.errors import BusError
from replicator.logs import get_logger

if TYPE_CHECKING:
    from replicator.config.loading import MqttConfig

log = get_logger(__name__)
# What a failed connection to the broker asks of the operator (said with each failure).
BROKER_FIX = (
    "is the MQTT broker running there? its address is [mqtt] host and port of the config "
    "(tls, username and password_file if it wants them); the daemon keeps trying"
)

# Unacknowledged messages the broker may have in flight to us (MQTT v5 Receive Maximum). This is
# what bounds our in-memory queue: past it the broker holds events until we ack, so back-pressure
# from the journal reaches the broker instead of growing our memory.
RECEIVE_MAXIMUM = 256
# The largest packet the broker may send us (MQTT v5 Maximum Packet Size): an event payload
# (MAX_PAYLOAD_BYTES) plus room for the topic and properties. A larger message is dropped by
# the broker for us (as the spec says) instead of arriving to be refused once in memory.
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024
# Reconnect backoff: the first retry is quick (a broker restart takes well under a second), the
# cap keeps a long outage from hammering the broker or flooding the log.
RECONNECT_INITIAL_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 10.0
# CONNECT/SUBSCRIBE round trips on a LAN take milliseconds; 10 s means the broker is not there.
REQUEST_TIMEOUT_SECONDS = 10.0
# A QoS 1 publish waits this long for the PUBACK; the bridge answers 503 past it so the
# registry retries, well before distribution's own request timeout.
PUBLISH_TIMEOUT_SECONDS = 5.0
# aiomqtt logs a warning past this many unanswered requests; publishers here legitimately have
# hundreds in flight during a burst.
PENDING_CALLS_WARNING = 10_000
# Subscription reason codes above this are failures (MQTT v5 §3.9.3); 1 means QoS 1 granted.
_SUBACK_FAILURE = 0x80


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS towards the broker: a CA bundle (None: the system's) and an optional client cert."""

    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True, slots=True)
class BusOptions:
    """Where and how to connect; `events_topic` None makes a publish-only client."""

    host: str
    port: int
    client_id: str
    events_topic: str | None = "registry/+/events"
    shared_group: str = ""
    persistent: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None
    keepalive: int = 30

    @classmethod
    def from_config(
        cls,
        mqtt: MqttConfig,
        *,
        client_id: str | None = None,
        subscribe: bool = True,
        persistent: bool = True,
    ) -> BusOptions:
        """Options from the [mqtt] section; the bridge passes its own id and no subscription."""
        password = mqtt.password.get_secret_value() if mqtt.password is not None else None
        tls = (
            TlsOptions(mqtt.ca_file, mqtt.client_cert, mqtt.client_key)
            if mqtt.tls or mqtt.ca_file or mqtt.client_cert
            else None
        )
        return cls(
            host=mqtt.host,
            port=mqtt.port,
            client_id=client_id or mqtt.client_id,
            events_topic=mqtt.events_topic if subscribe else None,
            shared_group=mqtt.shared_group,
            persistent=persistent,
            username=mqtt.username,
            password=password,
            tls=tls,
            keepalive=mqtt.keepalive,
        )

    @property
    def address(self) -> str:
        """The broker's host:port."""
        return f"{self.host}:{self.port}"

    @property
    def subscription(self) -> str | None:
        """The topic filter subscribed to: `$share/<group>/<events_topic>` when shared."""
        if self.events_topic is None:
            return None
        if self.shared_group:
            return f"$share/{self.shared_group}/{self.events_topic}"
        return self.events_topic


@dataclass(slots=True)
class _Connection:
    generation: int
    client: aiomqtt.Client
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class Bus:
    """One self-healing MQTT connection; an async context manager owning its keeper task."""

    def __init__(
        self,
        options: BusOptions,
        *,
        reconnect_initial: float = RECONNECT_INITIAL_SECONDS,
        reconnect_max: float = RECONNECT_MAX_SECONDS,
        expect_session: bool = False,
        on_session_lost: Callable[[], None] | None = None,
    ) -> None:
        self.options = options
        # Whether the broker should hold our persistent session: after our first connection,
        # or from the start when the caller knows one was made (a fleet's intake taken over).
        self.session = SessionWatch(expect=expect_session, on_lost=on_session_lost)
        self.connected = asyncio.Event()
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        # Bounded without dropping a message that awaits its ack: see bus_inbox.py.
        self.inbox = Inbox()
        self._connection: _Connection | None = None
        self._generation = 0
        self._tls_context: ssl.SSLContext | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Bus:
        """Start connecting in the background; `wait_connected()` waits for the first CONNACK."""
        if self.options.tls is not None:
            self._tls_context = await asyncio.to_thread(_tls_context, self.options.tls)
        self._keeper = asyncio.create_task(
            self._keep_connected(), name=f"mqtt-{self.options.client_id}"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect (the persistent session stays at the broker) and stop the keeper."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeper
            self._keeper = None
        self.connected.clear()
        self._connection = None

    async def wait_connected(self, within: float | None = None) -> None:
        """Return once connected and subscribed; raise BusError after `within` seconds."""
        try:
            async with asyncio.timeout(within):
                await self.connected.wait()
        except TimeoutError as exc:
            raise BusError(
                f"no connection to the MQTT broker at {self.options.address} after {within}s"
            ) from exc

    @property
    def queued(self) -> int:
        """Messages received and not yet taken by `messages()`."""
        return len(self.inbox)

    async def messages(self) -> AsyncIterator[BusMessage]:
        """Received messages, across reconnects; each must be `ack`ed once journalled."""
        while True:
            item = await self.inbox.get()
            if isinstance(item, BaseException):
                raise BusError(f"the MQTT connection keeper failed: {item}") from item
            connection = self._connection
            if connection is None or connection.generation != item.handle.generation:
                # Came on a connection that dropped: the broker delivers it again on this one.
                continue
            yield item

    async def ack(self, message: BusMessage) -> None:
        """PUBACK `message` now that it is journalled; a no-op if its connection is gone."""
        connection = self._connection
        if connection is None or connection.generation != message.handle.generation:
            log.debug("mqtt_ack_stale", topic=message.topic, mid=message.handle.mid)
            return
        if message.handle.qos == 0:
            return
        # aiomqtt 2.5 has no manual-ack API yet (empicano/aiomqtt#345): paho's is used directly.
        rc = connection.client._client.ack(message.handle.mid, message.handle.qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            log.debug("mqtt_ack_not_sent", topic=message.topic, rc=int(rc))

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        puback_within: float = PUBLISH_TIMEOUT_SECONDS,
    ) -> None:
        """Publish and return once the broker has acknowledged (QoS 1); else raise BusError."""
        connection = self._connection
        if connection is None or not self.connected.is_set():
            raise BusError(f"not connected to the MQTT broker at {self.options.address}")
        publishing = asyncio.ensure_future(
            connection.client.publish(topic, payload, qos=qos, timeout=math.inf)
        )
        lost = asyncio.ensure_future(connection.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {publishing, lost}, timeout=puback_within, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (publishing, lost):
                task.cancel()
            await asyncio.gather(publishing, lost, return_exceptions=True)
        if publishing in done and not publishing.cancelled():
            error = publishing.exception()
            if error is None:
                return
            raise BusError(f"publishing to {topic} failed: {error}") from error
        if lost in done:
            raise BusError(f"the connection to {self.options.address} dropped before the PUBACK")
        raise BusError(f"no PUBACK from {self.options.address} within {puback_within}s")

    async def _keep_connected(self) -> None:
        delay = self._reconnect_initial
        try:
            while True:
                generation = self._generation
                try:
                    await self._connect_once()
                except aiomqtt.MqttError as exc:
                    if self._generation != generation:
                        delay = self._reconnect_initial
                        broker = self.options.address
                        log.warning("mqtt_disconnected", broker=broker, error=str(exc))
                    else:
                        log.warning(
                            "mqtt_connect_failed",
                            broker=self.options.address,
                            client_id=self.options.client_id,
                            error=str(exc),
                            retry_in=round(delay, 2),
                            fix=BROKER_FIX,
                        )
                # Jitter spreads a fleet's reconnects after a broker restart.
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._reconnect_max)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("mqtt_keeper_failed", broker=self.options.address)
            self.inbox.fail(exc)
            raise

    async def _connect_once(self) -> None:
        """Connect, subscribe, then pump messages until the connection drops (MqttError)."""
        options = self.options
        client = aiomqtt.Client(
            options.host,
            options.port,
            identifier=options.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not options.persistent,
            properties=_connect_properties(options.persistent),
            username=options.username,
            password=options.password,
            tls_context=self._tls_context,
            keepalive=options.keepalive,
            timeout=REQUEST_TIMEOUT_SECONDS,
            logger=logging.getLogger("replicator.mqtt"),
        )
        client.pending_calls_threshold = PENDING_CALLS_WARNING
        connack = note_connack(client)
        fail_without_connack(client)
        # Before connecting: a resumed session redelivers right after the CONNACK, and those
        # messages must not be acknowledged before they are journalled.
        client._client.manual_ack_set(True)
        async with client:
            if options.subscription is not None:
                await _subscribe(client, options.subscription)
            self._generation += 1
            if options.persistent and options.subscription is not None:
                self.session.check(connack, broker=options.address, client_id=options.client_id)
            self.inbox.clear()  # left by a dropped connection: the broker redelivers it
            connection = _Connection(self._generation, client)
            self._connection = connection
            self.connected.set()
            log.info(
                "mqtt_connected",
                broker=self.options.address,
                client_id=options.client_id,
                subscription=options.subscription,
                generation=connection.generation,
            )
            try:
                async for message in client.messages:
                    self.inbox.put(self._wrap(message, connection.generation))
            finally:
                self.connected.clear()
                connection.lost.set()
                if self._connection is connection:
                    # Its messages still queued are dropped: the broker redelivers them.
                    self._connection = None

    def _wrap(self, message: aiomqtt.Message, generation: int) -> BusMessage:
        topic = message.topic.value
        events_topic = self.options.events_topic
        payload = message.payload
        return BusMessage(
            topic=topic,
            payload=payload if isinstance(payload, bytes) else str(payload or "").encode(),
            source_name=source_from_topic(events_topic, topic) if events_topic else None,
            handle=AckHandle(generation, message.mid, message.qos),
        )


async def _subscribe(client: aiomqtt.Client, subscription: str) -> None:
    granted = await client.subscribe(subscription, qos=1)
    for code in granted:
        value = code if isinstance(code, int) else code.value
        if value >= _SUBACK_FAILURE or value < 1:
            raise aiomqtt.MqttError(f"the broker refused the QoS 1 subscription {subscription}")
    log.debug("mqtt_subscribed", subscription=subscription)


def _connect_properties(persistent: bool) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    properties.MaximumPacketSize = MAX_PACKET_BYTES
    properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS if persistent else 0
    return properties


def _tls_context(options: TlsOptions) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            cafile=str(options.ca_file) if options.ca_file else None
        )
        if options.client_cert is not None:
            context.load_cert_chain(
                str(options.client_cert),
                str(options.client_key) if options.client_key else None,
            )
    except (OSError, ssl.SSLError) as exc:
        raise BusError(f"cannot load the MQTT TLS files: {exc}", temporary=False) from exc
    return context
