"""What the broker's CONNACK tells of our persistent session, and what is done about it.

A broker's settings (persistence, queue limits) cannot be read over MQTT; what can be read is
its answer to each CONNECT: whether it still had our session, and the session expiry it
granted. A session missing where one was made means the broker restarted without persistence,
lost its store, or let the session expire: what was published for us meanwhile is gone from
the bus, and the caller is told (the daemon runs reconcile at once). A connection the broker
closes before its CONNACK fails at once, so the bus connects again without waiting out its
request timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties

from replicator.logs import get_logger

log = get_logger(__name__)

# How long the broker keeps our session (subscriptions and queued QoS 1 events) while we are
# away: a week covers a long weekend of outage plus a slow recovery. Events older than that are
# better handled by `replicator backfill` than by replaying a week-old queue.
SESSION_EXPIRY_SECONDS = 7 * 24 * 3600


@dataclass(slots=True)
class Connack:
    """What the broker's CONNACK said: whether it had our session, the expiry it granted."""

    session_present: bool = False
    session_expiry: int | None = None


def note_connack(client: aiomqtt.Client) -> Connack:
    """A Connack filled in when `client` connects: aiomqtt 2.5 keeps neither the flags nor the
    properties, so paho's callback (which aiomqtt installed) is wrapped."""
    connack = Connack()
    # paho types the attribute as the union of its callback API versions; aiomqtt's is v2.
    installed: Any = client._client.on_connect

    def on_connect(
        paho_client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: Any,
        properties: Properties | None = None,
    ) -> None:
        connack.session_present = bool(flags.session_present)
        connack.session_expiry = getattr(properties, "SessionExpiryInterval", None)
        installed(paho_client, userdata, flags, reason_code, properties)

    client._client.on_connect = on_connect
    return connack


def fail_without_connack(client: aiomqtt.Client) -> None:
    """Make `client`'s connect fail as soon as the broker closes the connection before its
    CONNACK (a broker going down mid-handshake, as a restart does): aiomqtt 2.5 ignores a
    disconnection before the CONNACK and waits out its whole request timeout (10 s measured),
    which held a fleet's intake taken over during a broker restart that long."""
    installed: Any = client._client.on_disconnect
    # This connect's own future: aiomqtt replaces it after a failed connect, and an exception
    # set on the replacement would never be retrieved.
    connecting = client._connected

    def on_disconnect(
        paho_client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: Any,
        properties: Properties | None = None,
    ) -> None:
        if not connecting.done():
            connecting.set_exception(
                aiomqtt.MqttError(
                    f"the broker closed the connection before its CONNACK ({reason_code})"
                )
            )
        installed(paho_client, userdata, flags, reason_code, properties)

    client._client.on_disconnect = on_disconnect


class SessionWatch:
    """Checks each CONNACK of one persistent session; counts the sessions found lost."""

    def __init__(self, *, expect: bool, on_lost: Callable[[], None] | None) -> None:
        # Whether the broker should hold the session: once connected, or when the caller knows.
        self._expect = expect
        self._on_lost = on_lost
        self.lost = 0

    def check(self, connack: Connack, *, broker: str, client_id: str) -> None:
        """Log a shorter expiry than asked (mosquitto's max_session_expiry_interval) and a
        session missing where one was made (then tell `on_lost`)."""
        granted = connack.session_expiry
        if granted is not None and granted < SESSION_EXPIRY_SECONDS:
            log.warning(
                "mqtt_session_expiry_reduced", broker=broker, client_id=client_id,
                asked=SESSION_EXPIRY_SECONDS, granted=granted,
            )  # fmt: skip
        if self._expect and not connack.session_present:
            self.lost += 1
            log.error(
                "mqtt_session_lost", broker=broker, client_id=client_id,
                reason="the broker has no session for this client: restarted without "
                "persistence, store lost, or session expired; events published meanwhile are "
                "lost to the bus and left to reconcile",
            )  # fmt: skip
            if self._on_lost is not None:
                self._on_lost()
        self._expect = True
