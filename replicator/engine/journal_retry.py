"""Retrying a journal write that failed (disk full, database away) until it succeeds.

Quick at first (a lock or a blip clears in a moment), capped so a long outage is retried every
few seconds without flooding the log. Nothing is lost meanwhile: the daemon leaves an unrecorded
message unacknowledged, and a finished job waits in memory for its result to be written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

from replicator.engine.pauses import sleep_until
from replicator.errors import JournalError

JOURNAL_RETRY_INITIAL_SECONDS = 0.5
JOURNAL_RETRY_MAX_SECONDS = 5.0
T = TypeVar("T")


@overload
async def persist(
    write: Callable[[], Awaitable[T]],
    *,
    failed: Callable[[JournalError], None],
    stop: None = None,
) -> T: ...


@overload
async def persist(
    write: Callable[[], Awaitable[T]],
    *,
    failed: Callable[[JournalError], None],
    stop: asyncio.Event,
) -> T | None: ...


async def persist(
    write: Callable[[], Awaitable[T]],
    *,
    failed: Callable[[JournalError], None],
    stop: asyncio.Event | None = None,
) -> T | None:
    """Run `write` until the journal takes it, telling `failed` of each refusal; with `stop`,
    give up (None) once it is set between attempts."""
    delay = JOURNAL_RETRY_INITIAL_SECONDS
    while True:
        try:
            return await write()
        except JournalError as exc:
            failed(exc)
        if stop is None:
            await asyncio.sleep(delay)
        elif await sleep_until(delay, stop):
            return None
        delay = min(delay * 2, JOURNAL_RETRY_MAX_SECONDS)
