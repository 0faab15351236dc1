"""Messages kept aside (deferred_messages) on SQLite and PostgreSQL: kept once however often
they are delivered, claimed once when due, and forgotten once handled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from replicator.journal import EventOutcome, Journal
from replicator.journal.deferred import Kept
from replicator.journal.event_rows import Fingerprint, ReceivedEvent

pytestmark = pytest.mark.integration

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TOPIC = "registry/use1/events"
PAYLOAD = b'{"events": [{"format": "quay"}]}'
SHA256 = Fingerprint(PAYLOAD).of()
LEASE = timedelta(minutes=5)


def kept(attempts: int, due: datetime, error: str = "v1: 503") -> Kept:
    """The message PAYLOAD kept aside after `attempts` failed reads, due at `due`."""
    return Kept(TOPIC, "use1", PAYLOAD, SHA256, attempts, due, error)


class TestDeferred:
    """Journal.defer_message, claim_deferred, drop_deferred and deferred_waiting."""

    async def test_kept_message_is_claimed_when_due_and_once(self, journal: Journal) -> None:
        """A kept message is not claimed before it is due, is claimed whole once due, and not
        again while its lease runs; after the lease it comes back."""
        await journal.defer_message(kept(1, T0))
        assert await journal.claim_deferred(5, T0 - timedelta(seconds=1), T0 + LEASE) == []
        [claimed] = await journal.claim_deferred(5, T0, T0 + LEASE)
        assert (claimed.topic, claimed.source, claimed.payload) == (TOPIC, "use1", PAYLOAD)
        assert (claimed.attempts, claimed.last_error) == (1, "v1: 503")
        assert await journal.claim_deferred(5, T0 + timedelta(seconds=1), T0 + LEASE) == []
        [again] = await journal.claim_deferred(5, T0 + LEASE, T0 + 2 * LEASE)
        assert again.id == claimed.id

    async def test_the_same_message_is_kept_once(self, journal: Journal) -> None:
        """A redelivery kept aside again updates the one row: its due time and error change,
        its count of failed reads is never lowered."""
        await journal.defer_message(kept(3, T0))
        await journal.defer_message(kept(1, T0 + LEASE, "v1: connection refused"))
        assert await journal.deferred_waiting() == (1, T0 + LEASE)
        [claimed] = await journal.claim_deferred(5, T0 + LEASE, T0 + 2 * LEASE)
        assert (claimed.attempts, claimed.last_error) == (3, "v1: connection refused")

    async def test_dropped_message_is_gone(self, journal: Journal) -> None:
        """A handled message is dropped once: it is never claimed again."""
        await journal.defer_message(kept(1, T0))
        assert await journal.drop_deferred(TOPIC, SHA256) == 1
        assert await journal.drop_deferred(TOPIC, SHA256) == 0
        assert await journal.claim_deferred(5, T0 + LEASE, T0 + 2 * LEASE) == []
        assert await journal.deferred_waiting() == (0, None)

    async def test_event_row_is_written_with_the_kept_message(self, journal: Journal) -> None:
        """The event row saying the message was deferred is recorded with it."""
        row = ReceivedEvent(
            source="use1", topic=TOPIC, payload=PAYLOAD, outcome=EventOutcome.DEFERRED,
            reason="unresolved_tag: attempt 1 of 10, again in 2s: v1: 503",
        )  # fmt: skip
        await journal.defer_message(kept(1, T0), row)
        [event] = await journal.events()
        assert (event.outcome, event.reason) == (EventOutcome.DEFERRED, row.reason)
        assert (await journal.deferred_waiting())[0] == 1
