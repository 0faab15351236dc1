"""A registry's bandwidth limit: a token bucket that blob bodies sent to it draw from.

One bucket per registry (`registries.<name>.max_bandwidth`, `copy --max-bandwidth`), shared by
every job uploading there. Only blob bodies are metered: HEADs, manifests and upload POSTs are
never queued behind it, and they are a rounding error of the bytes. Waiters are served in turn
(FIFO), so concurrent uploads share the rate evenly.

    limit = Bandwidth(8 * 1024 * 1024)
    await client.request("PUT", ..., content=limit.metered(chunks))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

# Bytes that may go at once after an idle spell: a quarter second's worth lets a transfer make
# up for a moment the process was busy elsewhere (a loaded machine fell 14% short with 20 ms),
# and is under 1% of the bytes of a copy that lasts half a minute.
BURST_SECONDS = 0.25
# Largest piece drawn at once: a network chunk larger than this is sent in pieces, so one
# upload's 1 MiB chunk does not hold the others back for long at a low limit.
PIECE_BYTES = 64 * 1024


class Bandwidth:
    """A token bucket of `rate` bytes per second."""

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError(f"a bandwidth limit must be positive, got {rate}")
        self.rate = rate
        self._capacity = rate * BURST_SECONDS
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._turn = asyncio.Lock()

    async def spend(self, size: int) -> None:
        """Wait until `size` bytes may go (in turn with the other senders)."""
        async with self._turn:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= size
            if self._tokens < 0:
                # In debt: sleep until it is paid; the next sender starts from zero.
                await asyncio.sleep(-self._tokens / self.rate)

    async def metered(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks`, each let through once the bucket allows it."""
        async for chunk in chunks:
            for start in range(0, len(chunk), PIECE_BYTES):
                piece = chunk[start : start + PIECE_BYTES]
                await self.spend(len(piece))
                yield piece
