"""What a publisher can make the bus hold, against a real mosquitto: a message larger than any
event is never delivered to us (MQTT v5 Maximum Packet Size), and a flood of QoS 0 messages
(which the broker's flow control does not cover) fills a bounded share of the local queue while
every QoS 1 message is still delivered, none dropped unacknowledged."""

from __future__ import annotations

import asyncio
import itertools

import aiomqtt
import pytest

from replicator.daemon.bus import RECEIVE_MAXIMUM, Bus, BusOptions
from replicator.daemon.bus_inbox import MAX_QUEUED_QOS0
from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES
from tests.support.mqtt_fixtures import Mosquitto

pytestmark = pytest.mark.integration

RECEIVE_SECONDS = 20.0
# A message four times the largest event we accept.
OVERSIZED = b"x" * (4 * MAX_PAYLOAD_BYTES)
QOS0_FLOOD = 5000
# More QoS 1 messages than the broker may have in flight to us, so some wait for our acks.
QOS1_COUNT = RECEIVE_MAXIMUM + 44
_ids = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test on the shared broker uses."""
    return f"{prefix}-{next(_ids)}"


async def publisher(broker: Mosquitto) -> aiomqtt.Client:
    """A plain MQTT v5 client (not our Bus: it publishes what a hostile publisher would)."""
    return aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=unique("hostile"),
        protocol=aiomqtt.ProtocolVersion.V5,
    )  # fmt: skip


class TestBusBounds:
    async def test_oversized_message_is_never_delivered(self, mosquitto: Mosquitto) -> None:
        """A 4 MiB message on the events topic is not delivered to the bus (the broker drops it
        for us); the small message after it is."""
        root = unique("registry")
        options = BusOptions(
            host="127.0.0.1", port=mosquitto.port, client_id=unique("consumer"),
            events_topic=f"{root}/+/events", persistent=False,
        )  # fmt: skip
        async with Bus(options) as bus, await publisher(mosquitto) as hostile:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            await hostile.publish(f"{root}/src1/events", OVERSIZED, qos=1)
            await hostile.publish(f"{root}/src1/events", b"small", qos=1)
            async with asyncio.timeout(RECEIVE_SECONDS):
                message = await anext(bus.messages())
            await bus.ack(message)
        assert message.payload == b"small"

    async def test_qos0_flood_is_bounded_and_every_qos1_message_arrives(
        self, mosquitto: Mosquitto
    ) -> None:
        """QOS0_FLOOD QoS 0 messages and QOS1_COUNT QoS 1 messages while the consumer is not
        reading: at most RECEIVE_MAXIMUM + MAX_QUEUED_QOS0 are held, and every QoS 1 message
        is delivered once read and acknowledged."""
        root = unique("registry")
        options = BusOptions(
            host="127.0.0.1", port=mosquitto.port, client_id=unique("consumer"),
            events_topic=f"{root}/+/events", persistent=False,
        )  # fmt: skip
        async with Bus(options) as bus, await publisher(mosquitto) as hostile:
            await bus.wait_connected(within=RECEIVE_SECONDS)
            for n in range(QOS0_FLOOD):
                await hostile.publish(f"{root}/src1/events", b"q0-%d" % n, qos=0)
            for n in range(QOS1_COUNT):
                await hostile.publish(f"{root}/src1/events", b"q1-%d" % n, qos=1)
            await asyncio.sleep(1.0)  # the broker sends what it may
            held = bus.queued
            received: set[bytes] = set()
            async with asyncio.timeout(RECEIVE_SECONDS):
                messages = bus.messages()
                while len(received) < QOS1_COUNT:
                    message = await anext(messages)
                    if message.payload.startswith(b"q1-"):
                        received.add(message.payload)
                    await bus.ack(message)
        print(f"BUS_QUEUED_UNDER_FLOOD {held}")
        assert held <= RECEIVE_MAXIMUM + MAX_QUEUED_QOS0
        assert len(received) == QOS1_COUNT
