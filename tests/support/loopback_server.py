"""Loopback TCP servers run in a background thread with their own event loop, and the byte relay
the test proxies share.

`LoopbackServer` listens on a free 127.0.0.1 port; a subclass says what one connection does
(`handle`). `start()` returns once it listens, `stop()` cancels every connection and ends the
thread, so synchronous tests and benches can use it. `TcpRelay` is the plain relay: each client
connection gets its own upstream connection and bytes are copied both ways (`pump`) until each
side ends; the cutting proxy (tests/support/cutting_proxy.py) and the bench's delaying relay
(bench/delay_proxy.py) change only what a pump does with the bytes. The fault proxy
(tests/support/fault_proxy.py) speaks HTTP, so it shares the server and not the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
from collections.abc import Callable
from typing import Self

# 64 KiB reads: large enough for throughput, small enough that a blob is never buffered whole.
CHUNK_SIZE = 64 * 1024
# Seconds to wait for the server thread to start or stop; both take milliseconds.
THREAD_TIMEOUT_SECONDS = 10.0


def loopback_address(url: str) -> tuple[str, int]:
    """(host, port) of a loopback http URL; ValueError for anything else (proxies stay local)."""
    found = re.fullmatch(r"http://(127\.0\.0\.1|localhost):(\d+)/?", url)
    if found is None:
        raise ValueError(f"upstream must be a loopback http URL, got {url!r}")
    return found[1], int(found[2])


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN, as a dropped link looks to both ends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # SO_LINGER on with a zero timeout makes close() send RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class LoopbackServer:
    """A TCP server on 127.0.0.1 in a thread of its own; subclasses implement `handle`."""

    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT` of the server."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` of the server."""
        return f"http://{self.host}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection (the server closes nothing itself)."""
        raise NotImplementedError

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run `callback()` on the server's loop (from any thread); nothing when stopped."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(callback)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handle(reader, writer)
        except asyncio.CancelledError:
            # Only stop() cancels: end quietly. (Python 3.11's start_server callback calls
            # task.exception() on a cancelled handler and logs a CancelledError traceback.)
            return
        finally:
            self._tasks.discard(task)

    def start(self) -> Self:
        """Start listening on a free loopback port in a background thread; return self."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                for task in list(self._tasks):
                    task.cancel()
                loop.run_until_complete(
                    asyncio.gather(*self._tasks, server.wait_closed(), return_exceptions=True)
                )
                loop.close()

        name = f"{type(self).__name__}-{id(self)}"
        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        if not ready.wait(THREAD_TIMEOUT_SECONDS):
            raise TimeoutError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        """Stop the server and close every connection."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(THREAD_TIMEOUT_SECONDS)
        self._loop = None
        self._thread = None


class TcpRelay(LoopbackServer):
    """Relays each connection to `upstream_url` byte for byte; subclasses change `pump`."""

    def __init__(self, upstream_url: str) -> None:
        super().__init__()
        self.upstream_host, self.upstream_port = loopback_address(upstream_url)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Open the upstream connection (the client is reset when it cannot be), relay, close."""
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            reset(writer)
            return
        try:
            await self.relay(reader, writer, up_reader, up_writer)
        except (ConnectionError, OSError, ExceptionGroup):
            pass
        finally:
            for side in (writer, up_writer):
                with contextlib.suppress(Exception):
                    side.close()

    async def relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Pump both directions until both end (one failing ends the other)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.pump(reader, up_writer, upstream=True))
            group.create_task(self.pump(up_reader, writer, upstream=False))

    async def pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        """Copy one direction until EOF, then half-close (the other may still be answering)."""
        while data := await reader.read(CHUNK_SIZE):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
