"""A TCP relay that adds a fixed one-way latency in each direction, without limiting throughput.

Each chunk read from one side is stamped with its arrival time and written to the other side at
arrival + delay by a separate writer task, so many chunks are in flight at once (as on a long
fat network) rather than each waiting for the previous one. A round trip through the relay costs
2 x delay. Loopback only; runs in a background thread with its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

# 64 KiB: the usual socket read size; each chunk is delayed independently.
CHUNK_SIZE = 64 * 1024
# Chunks buffered per direction before reading pauses: 4096 x 64 KiB = 256 MiB, far above the
# bandwidth-delay product of loopback at 25 ms, so the relay never throttles a transfer.
MAX_QUEUED_CHUNKS = 4096
# Seconds to wait for the relay thread to start or stop.
THREAD_TIMEOUT_SECONDS = 10.0


class DelayProxy:
    """Relays 127.0.0.1:port -> upstream_host:upstream_port with `delay` seconds each way."""

    def __init__(self, upstream_host: str, upstream_port: int, *, delay: float) -> None:
        if upstream_host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"upstream must be on loopback, got {upstream_host}")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT` of the relay."""
        return f"127.0.0.1:{self.port}"

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(reader, upstream_writer))
                group.create_task(self._pump(upstream_reader, writer))
        except (ConnectionError, OSError, ExceptionGroup):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels: end quietly. (Python 3.11's start_server callback calls
            # task.exception() on a cancelled handler and logs a CancelledError traceback.)
            return
        finally:
            for stream in (writer, upstream_writer):
                if stream is not None:
                    stream.close()
            self._tasks.discard(task)

    def start(self) -> DelayProxy:
        """Listen on a free loopback port in a background thread; return self."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                for task in list(self._tasks):
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name="delay-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(THREAD_TIMEOUT_SECONDS):
            raise TimeoutError("delay proxy did not start")
        return self

    def stop(self) -> None:
        """Stop relaying and close every connection."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(THREAD_TIMEOUT_SECONDS)
        self._loop = None
        self._thread = None
