"""A TCP relay that adds a fixed one-way latency in each direction, without limiting throughput.

Each chunk read from one side is stamped with its arrival time and written to the other side at
arrival + delay by a separate writer task, so many chunks are in flight at once (as on a long
fat network) rather than each waiting for the previous one. A round trip through the relay costs
2 x delay. Loopback only; runs in a background thread with its own event loop (the relay of
tests/support/loopback_server.py, with a delaying pump).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.support.loopback_server import CHUNK_SIZE, TcpRelay

# Chunks buffered per direction before reading pauses: 4096 x 64 KiB = 256 MiB, far above the
# bandwidth-delay product of loopback at 25 ms, so the relay never throttles a transfer.
MAX_QUEUED_CHUNKS = 4096


class DelayProxy(TcpRelay):
    """Relays 127.0.0.1:port -> upstream_host:upstream_port with `delay` seconds each way."""

    def __init__(self, upstream_host: str, upstream_port: int, *, delay: float) -> None:
        super().__init__(f"http://{upstream_host}:{upstream_port}")
        self.delay = delay

    async def pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        """Copy one direction, each chunk written `delay` seconds after it was read."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_QUEUED_CHUNKS)

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivery = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(CHUNK_SIZE)
                await queue.put((time.monotonic() + self.delay, data))
                if not data:
                    break
            await delivery
        finally:
            delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await delivery
