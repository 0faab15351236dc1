"""A TCP proxy that resets each connection after N bytes in either direction (loopback only).

A long link that drops every few minutes, in miniature: every connection through it is reset
(RST) as soon as `cut_after` bytes have passed in one direction, whatever the HTTP exchange is
doing at that moment. It counts the bytes it forwarded each way, so a test can say what a
transfer cost on the wire. It knows nothing of HTTP: a registry behind it sees the proxy's
address in the Host header and writes its Locations to point at the proxy.

    proxy = CuttingProxy(registry.url, cut_after=8 * MIB); proxy.start()
    ...; proxy.bytes_to_upstream, proxy.bytes_to_client, proxy.cuts; proxy.stop()

With `cut_after=None` it only counts: the bytes each way, and the rate upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass

from tests.support.loopback_server import CHUNK_SIZE, TcpRelay, reset

# Kernel buffers of the proxy's sockets. What sits in buffers when a link drops is lost, as on
# a real link (its bandwidth-delay product); loopback's autotuned megabytes would lose far more
# per cut than a WAN path does, so the proxy keeps its side small.
SOCKET_BUFFER = 128 * 1024


@dataclass(eq=False)
class _Connection:
    """One proxied connection: both sockets and the bytes each direction has carried."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    to_upstream: int = 0
    to_client: int = 0
    cut: bool = False


class CuttingProxy(TcpRelay):
    """The proxy; `start()` runs it in a thread, `stop()` ends it. Listens on 127.0.0.1."""

    def __init__(
        self, upstream_url: str, *, cut_after: int | None, max_cuts: int | None = None
    ) -> None:
        super().__init__(upstream_url)
        self.cut_after = cut_after  # None: pass everything (a plain counting proxy)
        self.max_cuts = max_cuts  # None: cut every connection; else only the first max_cuts
        self.bytes_to_upstream = 0
        self.bytes_to_client = 0
        self.cuts = 0
        self.connections = 0
        # (monotonic time, bytes so far) each time bytes went upstream, for a rate.
        self.upstream_progress: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._live: set[_Connection] = set()
        self.down = False  # the link is down: every connection is reset at once

    def reset_counts(self) -> None:
        """Start counting bytes and cuts afresh (after a test's set-up went through it)."""
        with self._lock:
            self.bytes_to_upstream = self.bytes_to_client = self.cuts = self.connections = 0
            self.upstream_progress = []

    def go_down(self) -> None:
        """Take the link down: the connections open are reset, new ones reset at once."""
        self.down = True
        self.call_soon(self._cut_all)

    def come_up(self) -> None:
        """Bring the link back."""
        self.down = False

    def _cut_all(self) -> None:
        for conn in list(self._live):
            self._cut(conn)

    def upstream_rate(self, low: float, high: float) -> float:
        """Bytes per second upstream while the total went from `low` to `high` (fractions of
        what went in all): the steady rate, without the requests before and after a blob."""
        with self._lock:
            samples = list(self.upstream_progress)
        total = samples[-1][1]
        start = next(sample for sample in samples if sample[1] >= low * total)
        end = next(sample for sample in samples if sample[1] >= high * total)
        return (end[1] - start[1]) / (end[0] - start[0])

    # -- one connection -----------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Reset at once while the link is down; relay otherwise."""
        if self.down:
            reset(writer)
            return
        await super().handle(reader, writer)

    async def relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Relay both directions over small buffers, counting and cutting per connection."""
        for side in (writer, up_writer):
            _small_buffers(side)
        with self._lock:
            self.connections += 1
        conn = _Connection(client=writer, upstream=up_writer)
        self._live.add(conn)
        try:
            await asyncio.gather(
                self._pump(conn, reader, up_writer, upstream=True),
                self._pump(conn, up_reader, writer, upstream=False),
            )
        finally:
            self._live.discard(conn)

    async def _pump(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        """Copy one direction until EOF, an error, or the cut."""
        try:
            while not conn.cut:
                data = await reader.read(CHUNK_SIZE)
                if not data or conn.cut:
                    break
                carried = conn.to_upstream if upstream else conn.to_client
                limit = None if self._spent() else self.cut_after
                room = None if limit is None else limit - carried
                if room is not None and len(data) >= room:
                    data = data[:room]
                writer.write(data)
                await writer.drain()
                self._count(conn, len(data), upstream=upstream)
                if room is not None and len(data) >= room:
                    with self._lock:
                        self.cuts += 1
                    self._cut(conn)
                    return
            if not conn.cut:
                # Half-close: the other direction may still be answering.
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()
        except (ConnectionError, OSError):
            self._cut(conn)

    def _spent(self) -> bool:
        """Whether the link has stopped dropping connections (or never did)."""
        return self.cut_after is None or (self.max_cuts is not None and self.cuts >= self.max_cuts)

    def _count(self, conn: _Connection, size: int, *, upstream: bool) -> None:
        with self._lock:
            if upstream:
                conn.to_upstream += size
                self.bytes_to_upstream += size
                self.upstream_progress.append((time.monotonic(), self.bytes_to_upstream))
            else:
                conn.to_client += size
                self.bytes_to_client += size

    def _cut(self, conn: _Connection) -> None:
        if conn.cut:
            return
        conn.cut = True
        reset(conn.client)
        reset(conn.upstream)


def _small_buffers(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
