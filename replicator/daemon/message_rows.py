"""One bus message being handled, and the journal rows intake records of it.

Each row names the message's topic, payload and fingerprint; the event it is of is an accepted
push or delete (with its jobs), an echo of the daemon's own write (no job), or the message's
events needing no work, counted per reason in one row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from replicator.domain.events import DeleteEvent, PushEvent
from replicator.domain.events.echoes import Echo
from replicator.domain.routing import Routing
from replicator.journal.event_rows import Fingerprint, ReceivedEvent
from replicator.journal.models import EventOutcome

# The reason recorded for an envelope without events.
NO_EVENTS = "no_events"


@dataclass(frozen=True, slots=True)
class Message:
    """One bus message being handled: where it came from, what it holds, its fingerprint."""

    topic: str
    payload: bytes
    source: str | None  # the source registry its topic names
    fingerprint: Fingerprint
    # Failed reads of its tags so far: 0 for a message from the bus, more for one kept aside.
    attempts: int = 0

    def rejected(self, reason: str) -> ReceivedEvent:
        """The message as the journal records it rejected, for `reason`."""
        return self.recorded(EventOutcome.REJECTED, reason)

    def recorded(self, outcome: EventOutcome, reason: str) -> ReceivedEvent:
        """The message as the journal records it with `outcome`, for `reason`."""
        return ReceivedEvent(
            source=self.source,
            topic=self.topic,
            payload=self.payload,
            outcome=outcome,
            reason=reason,
            fingerprint=self.fingerprint,
        )

    def accepted(
        self,
        event: PushEvent | DeleteEvent,
        routing: Routing,
        part: int,
        now: datetime,
        *,
        resolved: bool,
    ) -> ReceivedEvent:
        """One push or delete to journal, with its jobs; `resolved`: its digest was read at the
        source (a HEAD of its tag), which the recorded reason says."""
        when = event.pushed_at if isinstance(event, PushEvent) else event.deleted_at
        return ReceivedEvent(
            source=event.source,
            topic=self.topic,
            payload=self.payload,
            outcome=EventOutcome.ACCEPTED,
            reason=("digest resolved at the source; " if resolved else "")
            + (f"{len(routing.routes)} destination(s)" if routing.routes else "no rule matches"),
            job_keys=[r.key for r in routing.routes if r.denied is None],
            denied={r.key: r.denied for r in routing.routes if r.denied is not None},
            pushed_at=datetime.fromtimestamp(when, UTC) if when else None,
            not_before={
                r.key: now + timedelta(seconds=r.delay) for r in routing.routes if r.delay > 0
            },
            supersede=routing.supersedes,
            part=part,
            fingerprint=self.fingerprint,
        )

    def echo(self, event: PushEvent | DeleteEvent, echo: Echo, part: int) -> ReceivedEvent:
        """An echo to journal: no job, the write it echoes marked so."""
        return ReceivedEvent(
            source=event.source,
            topic=self.topic,
            payload=self.payload,
            outcome=EventOutcome.ECHO,
            reason=echo.detail,
            part=part,
            fingerprint=self.fingerprint,
            echoes=() if echo.write is None else (echo.write,),
        )

    def ignored(self, counts: Counter[str], part: int) -> ReceivedEvent:
        """One row for every ignored event of the message (`part`: the first), with their count
        per reason; for a message without events, the row saying so."""
        return ReceivedEvent(
            source=self.source,
            topic=self.topic,
            payload=self.payload,
            outcome=EventOutcome.IGNORED,
            reason=ignored_reason(counts),
            part=part,
            fingerprint=self.fingerprint,
        )


def ignored_reason(counts: Counter[str]) -> str:
    """ "pull" for one ignored event; "3 events ignored: pull 2, blob_push 1" for several."""
    total = sum(counts.values())
    if total == 0:
        return NO_EVENTS
    if total == 1:
        return next(iter(counts))
    detail = ", ".join(f"{why} {count}" for why, count in counts.most_common())
    return f"{total} events ignored: {detail}"
