"""The MQTT bus against a real mosquitto: sessions, late acks, shared subscriptions, restarts."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from typing import Any

import pytest

from replicator.daemon.bus import Bus, BusMessage, BusOptions, TlsOptions
from replicator.errors import BusError
from tests.support.loopback_server import TcpRelay
from tests.support.mqtt_fixtures import Mosquitto, MosquittoFactory

pytestmark = pytest.mark.integration

# A test waits this long for a message that should arrive (they take milliseconds).
RECEIVE_SECONDS = 10.0
# ...and this long to conclude that a message that should not arrive did not.
QUIET_SECONDS = 0.5

# A connection the broker closed before its CONNACK is tried again within this (the backoff's
# first steps are 0.1-0.4 s; aiomqtt alone waited out its 10 s request timeout).
CONNACK_RETRY_SECONDS = 3.0

_ids = itertools.count()


class ClosingBeforeConnack(TcpRelay):
    """In front of a broker: closes the first `closes` connections once their CONNECT arrives,
    as a broker going down mid-handshake does; relays the later ones."""

    def __init__(self, broker: Mosquitto, closes: int) -> None:
        super().__init__(f"http://127.0.0.1:{broker.port}")
        self.closes = closes
        self.closed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close (FIN) after the CONNECT's first bytes, or relay."""
        if self.closed < self.closes:
            self.closed += 1
            await reader.read(1)
            writer.close()
            return
        await super().handle(reader, writer)


def options(broker: Mosquitto, client_id: str, **overrides: Any) -> BusOptions:
    """Options for a client of `broker`; keyword arguments override BusOptions fields."""
    return replace(BusOptions(host="127.0.0.1", port=broker.port, client_id=client_id), **overrides)


def unique(prefix: str) -> str:
    """A client id or topic prefix no other test on the shared broker uses."""
    return f"{prefix}-{next(_ids)}"


async def receive(bus: Bus, count: int) -> list[BusMessage]:
    """The next `count` messages of `bus`, unacknowledged."""
    received: list[BusMessage] = []
    async with asyncio.timeout(RECEIVE_SECONDS):
        iterator = bus.messages()
        while len(received) < count:
            received.append(await anext(iterator))
    return received


async def nothing_more(bus: Bus) -> bool:
    """Whether no message arrives within QUIET_SECONDS."""
    try:
        async with asyncio.timeout(QUIET_SECONDS):
            await anext(bus.messages())
    except TimeoutError:
        return True
    return False


async def publish_all(broker: Mosquitto, topic_root: str, payloads: list[bytes]) -> None:
    """Publish each payload on `<topic_root>/<source>/events` from a separate client."""
    async with Bus(
        options(broker, unique("publisher"), events_topic=None, persistent=False)
    ) as bus:
        await bus.wait_connected(within=RECEIVE_SECONDS)
        for payload in payloads:
            await bus.publish(f"{topic_root}/src1/events", payload)


async def publish_until_refused(bus: Bus) -> None:
    """Publish repeatedly until the bus refuses (the client noticed the broker is gone)."""
    async with asyncio.timeout(RECEIVE_SECONDS):
        while True:
            await bus.publish("registry/src1/events", b"lost")
            await asyncio.sleep(0.05)


@pytest.fixture
def topic_root() -> str:
    """A topic root of this test's own on the shared broker."""
    return unique("registry")


class TestBus:
    async def test_round_trip(self, mosquitto: Mosquitto, topic_root: str) -> None:
        """A published payload arrives once, with the source name taken from the topic."""
        consumer = options(mosquitto, unique("consumer"), events_topic=f"{topic_root}/+/events")
        async with Bus(consumer) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            await publish_all(mosquitto, topic_root, [b'{"events": []}'])
            (message,) = await receive(bus, 1)
            await bus.ack(message)
            assert (message.topic, message.payload, message.source_name) == (
                f"{topic_root}/src1/events",
                b'{"events": []}',
                "src1",
            )
            assert await nothing_more(bus)

    async def test_session_keeps_messages_while_away(
        self, mosquitto: Mosquitto, topic_root: str
    ) -> None:
        """Messages published while the consumer is disconnected arrive when it returns."""
        consumer = options(mosquitto, unique("consumer"), events_topic=f"{topic_root}/+/events")
        async with Bus(consumer) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
        payloads = [f"away-{i}".encode() for i in range(5)]
        await publish_all(mosquitto, topic_root, payloads)
        async with Bus(consumer) as bus:
            messages = await receive(bus, 5)
            for message in messages:
                await bus.ack(message)
        assert [m.payload for m in messages] == payloads

    async def test_burst_while_away_is_delivered_once(
        self, mosquitto: Mosquitto, topic_root: str
    ) -> None:
        """1,000 messages queued while away all arrive, more than the in-flight window allows."""
        consumer = options(mosquitto, unique("consumer"), events_topic=f"{topic_root}/+/events")
        async with Bus(consumer) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
        payloads = [f"burst-{i}".encode() for i in range(1000)]
        publisher = options(mosquitto, unique("publisher"), events_topic=None, persistent=False)
        async with Bus(publisher) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            await asyncio.gather(*(bus.publish(f"{topic_root}/s/events", p) for p in payloads))
        received: list[bytes] = []
        async with Bus(consumer) as bus:
            async with asyncio.timeout(RECEIVE_SECONDS):
                async for message in bus.messages():
                    received.append(message.payload)
                    await bus.ack(message)
                    if len(received) == len(payloads):
                        break
            assert await nothing_more(bus)
        assert sorted(received) == sorted(payloads)

    async def test_unacked_message_is_redelivered(
        self, mosquitto: Mosquitto, topic_root: str
    ) -> None:
        """A message received but not acknowledged comes again after a reconnect (no loss)."""
        consumer = options(mosquitto, unique("consumer"), events_topic=f"{topic_root}/+/events")
        async with Bus(consumer) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            await publish_all(mosquitto, topic_root, [b"first", b"second"])
            first, second = await receive(bus, 2)
            await bus.ack(first)
            # `second` is never acknowledged: the consumer "crashes" before journalling it.
        async with Bus(consumer) as bus:
            (again,) = await receive(bus, 1)
            await bus.ack(again)
            assert again.payload == second.payload
            assert await nothing_more(bus)
        async with Bus(consumer) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            assert await nothing_more(bus)

    async def test_shared_subscription_splits_messages(
        self, mosquitto: Mosquitto, topic_root: str
    ) -> None:
        """Two consumers in one shared group each get some of the messages, together all once."""
        group = unique("group")
        topic = f"{topic_root}/+/events"
        first = options(mosquitto, unique("fleet"), events_topic=topic, shared_group=group)
        second = options(mosquitto, unique("fleet"), events_topic=topic, shared_group=group)
        payloads = [f"burst-{i}".encode() for i in range(20)]
        async with Bus(first) as bus_a, Bus(second) as bus_b:
            await bus_a.wait_connected(within=RECEIVE_SECONDS)
            await bus_b.wait_connected(within=RECEIVE_SECONDS)
            await publish_all(mosquitto, topic_root, payloads)
            got: dict[str, list[bytes]] = {"a": [], "b": []}

            async def drain(name: str, bus: Bus) -> None:
                async for message in bus.messages():
                    got[name].append(message.payload)
                    await bus.ack(message)

            async with asyncio.timeout(RECEIVE_SECONDS):
                drains = [
                    asyncio.create_task(drain("a", bus_a)),
                    asyncio.create_task(drain("b", bus_b)),
                ]
                while len(got["a"]) + len(got["b"]) < len(payloads):
                    await asyncio.sleep(0.01)
            await asyncio.sleep(QUIET_SECONDS)
            for task in drains:
                task.cancel()
            await asyncio.gather(*drains, return_exceptions=True)
        assert got["a"]
        assert got["b"]
        assert sorted(got["a"] + got["b"]) == sorted(payloads)

    async def test_broker_restart_reconnects(self, mosquitto_factory: MosquittoFactory) -> None:
        """After a broker restart the consumer reconnects by itself and keeps receiving."""
        broker = mosquitto_factory()
        consumer = options(broker, unique("consumer"), events_topic="registry/+/events")
        async with Bus(consumer) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            await publish_all(broker, "registry", [b"before"])
            (before,) = await receive(bus, 1)
            await bus.ack(before)
            broker.restart()
            async with asyncio.timeout(RECEIVE_SECONDS):
                while bus.connected.is_set():
                    await asyncio.sleep(0.01)
            await bus.wait_connected(within=RECEIVE_SECONDS)
            await publish_all(broker, "registry", [b"after"])
            # `before` may come again: its PUBACK may not have left before the broker stopped
            # (at least once), but `after` must arrive.
            seen: list[bytes] = []
            async with asyncio.timeout(RECEIVE_SECONDS):
                async for message in bus.messages():
                    await bus.ack(message)
                    seen.append(message.payload)
                    if message.payload == b"after":
                        break
        assert set(seen) <= {b"before", b"after"}

    async def test_a_connection_closed_before_its_connack_is_tried_again_at_once(
        self, mosquitto: Mosquitto, topic_root: str
    ) -> None:
        """A broker that closes the connection after the CONNECT and before its CONNACK (one
        going down mid-handshake, as a restart does) has the bus connect again at once, not
        after the 10 s request timeout, and receive."""
        relay = ClosingBeforeConnack(mosquitto, closes=1).start()
        try:
            consumer = options(
                mosquitto, unique("consumer"), port=relay.port,
                events_topic=f"{topic_root}/+/events",
            )  # fmt: skip
            started = time.monotonic()
            async with Bus(consumer) as bus:
                await bus.wait_connected(within=RECEIVE_SECONDS)
                waited = time.monotonic() - started
                await publish_all(mosquitto, topic_root, [b"after"])
                (message,) = await receive(bus, 1)
                await bus.ack(message)
        finally:
            relay.stop()
        assert relay.closed == 1
        assert waited < CONNACK_RETRY_SECONDS, f"connected {waited:.2f} s after the first try"
        assert message.payload == b"after"

    async def test_a_session_the_broker_lost_is_reported(
        self, mosquitto_factory: MosquittoFactory
    ) -> None:
        """A broker restarted with its store keeps the session and nothing is reported; one
        restarted without it has no session for us: mqtt_session_lost, the caller told once."""
        broker = mosquitto_factory()
        told: list[str] = []
        consumer = options(broker, unique("consumer"), events_topic="registry/+/events")
        async with Bus(consumer, on_session_lost=lambda: told.append("lost")) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            for keep_store in (True, False):
                broker.stop()
                if not keep_store:
                    for stored in (broker.folder / "data").iterdir():
                        stored.unlink()
                broker.start()
                async with asyncio.timeout(RECEIVE_SECONDS):
                    while bus.connected.is_set():
                        await asyncio.sleep(0.01)
                await bus.wait_connected(within=RECEIVE_SECONDS)
                assert told == ([] if keep_store else ["lost"])
        assert bus.session.lost == 1

    async def test_taking_over_a_session_the_broker_never_had_is_reported(
        self, mosquitto: Mosquitto
    ) -> None:
        """A fleet member taking over the intake session (expect_session) from a broker that
        has none for that client id reports it at once."""
        told: list[str] = []
        consumer = options(mosquitto, unique("intake"), events_topic="registry/+/events")
        async with Bus(
            consumer, expect_session=True, on_session_lost=lambda: told.append("lost")
        ) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
        assert told == ["lost"]

    async def test_tls_round_trip(self, mosquitto_factory: MosquittoFactory) -> None:
        """Over TLS with the broker's CA the bus connects and a message goes round."""
        broker = mosquitto_factory(tls=True)
        assert broker.ca_file is not None
        tls = TlsOptions(ca_file=broker.ca_file)
        consumer = options(broker, unique("consumer"), events_topic="registry/+/events", tls=tls)
        publisher = options(
            broker, unique("publisher"), events_topic=None, persistent=False, tls=tls
        )
        async with Bus(consumer) as bus, Bus(publisher) as pub:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            await pub.wait_connected(within=RECEIVE_SECONDS)
            await pub.publish("registry/src1/events", b"secret")
            (message,) = await receive(bus, 1)
            await bus.ack(message)
        assert message.payload == b"secret"

    async def test_tls_with_unknown_ca_never_connects(
        self, mosquitto_factory: MosquittoFactory
    ) -> None:
        """A broker certificate not signed by a trusted CA is refused: no connection."""
        broker = mosquitto_factory(tls=True)
        untrusted = options(broker, unique("consumer"), tls=TlsOptions())
        async with Bus(untrusted) as bus:
            with pytest.raises(BusError):
                await bus.wait_connected(within=QUIET_SECONDS)

    async def test_publish_without_broker_raises_bus_error(
        self, mosquitto_factory: MosquittoFactory
    ) -> None:
        """Publishing while the broker is down raises a temporary BusError, not a hang."""
        broker = mosquitto_factory()
        publisher = options(broker, unique("publisher"), events_topic=None, persistent=False)
        async with Bus(publisher) as bus:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            broker.stop()
            with pytest.raises(BusError) as caught:
                await publish_until_refused(bus)
            assert caught.value.temporary
            broker.start()
            await bus.wait_connected(within=RECEIVE_SECONDS)
            await bus.publish("registry/src1/events", b"delivered")
