"""Handling again the bus messages intake kept aside (a tag-only push whose source could not
answer for now, see domain.events.tag_resolution) once they are due."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from replicator.engine.pauses import sleep_until
from replicator.errors import JournalError
from replicator.journal.deferred import DeferredMessage
from replicator.journal.store import Journal
from replicator.logs import get_logger

log = get_logger(__name__)

# How often the daemon looks for kept messages now due: a second adds little to backoffs of
# seconds to minutes, for one indexed query that finds nothing almost always.
POLL_SECONDS = 1.0
# Kept messages handled per look; the rest wait a second.
BATCH = 16
# A kept message being handled is due again only after this: far longer than handling one takes
# (intake.RESOLVE_WITHIN_SECONDS per tag), so no fleet peer takes it meanwhile, and short enough
# that one left by a daemon stopped or killed meanwhile comes back within minutes.
LEASE_SECONDS = 300.0

HandleKept = Callable[[DeferredMessage], Awaitable[None]]


async def retry_deferred_forever(journal: Journal, handle: HandleKept, stop: asyncio.Event) -> None:
    """Until `stop`: hand each kept message to `handle` when it is due (intake records it,
    keeps it aside again, or rejects it); a journal outage is logged and waited out."""
    while not stop.is_set():
        if await sleep_until(POLL_SECONDS, stop):
            return
        now = datetime.now(UTC)
        try:
            due = await journal.claim_deferred(BATCH, now, now + timedelta(seconds=LEASE_SECONDS))
            for kept in due:
                if stop.is_set():
                    return  # the rest come back when their lease ends
                log.info("event_retried", topic=kept.topic, attempts=kept.attempts)
                await handle(kept)
        except JournalError as exc:
            log.warning("deferred_retry_failed", error=str(exc))
