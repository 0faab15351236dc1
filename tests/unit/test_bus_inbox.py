"""The bus's inbox: QoS 0 messages held up to their cap, QoS 1 messages never dropped."""

from __future__ import annotations

from replicator.daemon.bus_inbox import MAX_QUEUED_QOS0, AckHandle, BusMessage, Inbox


def message(n: int, qos: int) -> BusMessage:
    """A message numbered `n` at `qos`."""
    return BusMessage("registry/a/events", b"%d" % n, "a", AckHandle(1, n, qos))


class TestInbox:
    async def test_qos0_past_the_cap_is_dropped_and_counted(self) -> None:
        """Past MAX_QUEUED_QOS0 waiting, QoS 0 messages are dropped (counted); QoS 1 are not."""
        inbox = Inbox()
        for n in range(MAX_QUEUED_QOS0 + 10):
            inbox.put(message(n, 0))
        for n in range(1000):
            inbox.put(message(n, 1))
        assert len(inbox) == MAX_QUEUED_QOS0 + 1000
        assert inbox.dropped_qos0 == 10

    async def test_reading_makes_room_for_qos0_again(self) -> None:
        """A QoS 0 message read frees its place."""
        inbox = Inbox()
        for n in range(MAX_QUEUED_QOS0):
            inbox.put(message(n, 0))
        await inbox.get()
        inbox.put(message(999, 0))
        assert inbox.dropped_qos0 == 0

    async def test_clear_keeps_a_failure(self) -> None:
        """Clearing drops messages but not the producer's failure, and resets the QoS 0 count."""
        inbox = Inbox()
        for n in range(MAX_QUEUED_QOS0):
            inbox.put(message(n, 0))
        error = RuntimeError("keeper died")
        inbox.fail(error)
        inbox.clear()
        assert len(inbox) == 1
        assert await inbox.get() is error
        inbox.put(message(1, 0))
        assert inbox.dropped_qos0 == 0
