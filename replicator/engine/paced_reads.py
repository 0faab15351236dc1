"""A source read that must keep a floor rate (domain/transfers/pace.py), and which sources are
slow: a read below the floor is cut with a temporary error, so the job waits and retries instead
of holding a destination slot for as long as the source trickles.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from replicator.domain.transfers.pace import Floor, Pace, is_slow
from replicator.errors import SlowTransferError
from replicator.logs import get_logger

log = get_logger(__name__)
# Told of each cut and each read at pace: (source host, cuts in a row, slow now).
PaceObserver = Callable[[str, int, bool], None]


class SlowSources:
    """Cuts in a row per source host; a source is slow from SLOW_AFTER_CUTS on, until one of
    its reads keeps the pace."""

    def __init__(self, on_change: PaceObserver | None = None) -> None:
        self._cuts: dict[str, int] = {}
        self._on_change = on_change

    def cut(self, host: str) -> None:
        """A read from `host` was cut."""
        cuts = self._cuts.get(host, 0) + 1
        self._cuts[host] = cuts
        if is_slow(cuts) and not is_slow(cuts - 1):
            log.warning("source_slow", host=host, cuts_in_a_row=cuts)
        self._tell(host, cuts)

    def kept_pace(self, host: str) -> None:
        """A read from `host` completed at pace."""
        cuts = self._cuts.pop(host, 0)
        if is_slow(cuts):
            log.info("source_pace_restored", host=host)
        if cuts:
            self._tell(host, 0)

    def slow(self) -> list[str]:
        """The hosts slow now."""
        return sorted(host for host, cuts in self._cuts.items() if is_slow(cuts))

    def _tell(self, host: str, cuts: int) -> None:
        if self._on_change is not None:
            self._on_change(host, cuts, is_slow(cuts))


async def paced(
    chunks: AsyncIterator[bytes], floor: Floor, *, host: str, sources: SlowSources
) -> AsyncIterator[bytes]:
    """Pass `chunks` through; raise SlowTransferError (temporary) when the source waited on
    brings less than the floor within a window."""
    pace = Pace(floor)
    iterator = aiter(chunks)
    while True:
        started = time.monotonic()
        try:
            async with asyncio.timeout(pace.remaining()):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            sources.kept_pace(host)
            return
        except TimeoutError:
            pace.brought(0, time.monotonic() - started)
            sources.cut(host)
            log.info("transfer_cut", host=host, why=pace.shortfall())
            error = SlowTransferError(f"{host}: blob read cut, {pace.shortfall()}")
            error.host = host
            raise error from None
        pace.brought(len(chunk), time.monotonic() - started)
        yield chunk


Opener = Callable[[int], AbstractAsyncContextManager[AsyncIterator[bytes]]]


def paced_opener(open_at: Opener, floor: Floor, *, host: str, sources: SlowSources) -> Opener:
    """`open_at` (a source read from an offset, as resumable uploads take it), each read
    paced."""

    @asynccontextmanager
    async def opened(offset: int) -> AsyncIterator[AsyncIterator[bytes]]:
        async with open_at(offset) as chunks:
            yield paced(chunks, floor, host=host, sources=sources)

    return opened
