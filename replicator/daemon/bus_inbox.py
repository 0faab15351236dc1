"""The bus's local queue of received messages, and what bounds it without dropping any message
that still has to be acknowledged.

Its size is not capped, which would drop QoS 1 messages (aiomqtt's own bounded queue does just
that). Instead: the broker sends at most RECEIVE_MAXIMUM unacknowledged QoS 1 messages (MQTT v5
flow control, set at CONNECT), each at most the Maximum Packet Size; QoS 0 messages, which flow
control does not cover and nobody acknowledges, are held up to MAX_QUEUED_QOS0 and the rest
dropped and counted; and a reconnect clears what the dropped connection left, which the broker
redelivers on the new one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from replicator.logs import get_logger

log = get_logger(__name__)

# QoS 0 messages waiting at most: the bridge publishes QoS 1; a QoS 0 flood is a misconfigured
# or hostile publisher, and a QoS 0 message carries no promise of delivery.
MAX_QUEUED_QOS0 = 64


@dataclass(frozen=True, slots=True)
class AckHandle:
    """What `Bus.ack` needs: the connection the message came on, its packet id and QoS."""

    generation: int
    mid: int
    qos: int


@dataclass(frozen=True, slots=True)
class BusMessage:
    """One received message; `source_name` is the topic level at the '+' of the events topic."""

    topic: str
    payload: bytes
    source_name: str | None
    handle: AckHandle


class Inbox:
    """Received messages in arrival order, and the failure that ended their producer."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[BusMessage | BaseException] = asyncio.Queue()
        self._qos0 = 0
        self.dropped_qos0 = 0

    def __len__(self) -> int:
        return self._queue.qsize()

    def put(self, message: BusMessage) -> None:
        """Queue a received message; a QoS 0 one only while MAX_QUEUED_QOS0 allows."""
        if message.handle.qos == 0:
            if self._qos0 >= MAX_QUEUED_QOS0:
                self.dropped_qos0 += 1
                if self.dropped_qos0 % MAX_QUEUED_QOS0 == 1:  # a line per batch, not a flood
                    log.warning("mqtt_qos0_dropped", topic=message.topic, dropped=self.dropped_qos0)
                return
            self._qos0 += 1
        self._queue.put_nowait(message)

    def fail(self, error: BaseException) -> None:
        """Let the reader know the producer failed with `error`."""
        self._queue.put_nowait(error)

    async def get(self) -> BusMessage | BaseException:
        """The next message, or the producer's failure."""
        item = await self._queue.get()
        if isinstance(item, BusMessage) and item.handle.qos == 0:
            self._qos0 -= 1
        return item

    def clear(self) -> None:
        """Drop the messages queued so far (a failure is kept)."""
        kept = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, BaseException):
                kept.append(item)
        for item in kept:
            self._queue.put_nowait(item)
        self._qos0 = 0
