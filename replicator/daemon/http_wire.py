"""One HTTP/1.1 connection's framing, on h11 over asyncio streams: the next request head, a
request's body within a cap, a response written within a deadline, and what a refused client
still sends read and dropped. The server (http_server.py) decides what to answer and when to
give up; this module only moves its events to and from the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import replace
from typing import Any

import h11

from replicator.daemon.http_messages import Request, Response, head_of

# Bytes read from the socket at a time.
READ_CHUNK_BYTES = 64 * 1024
# Request heads larger than this are refused (h11's default is 16 KiB; ours are tiny).
MAX_HEAD_BYTES = 16 * 1024
# A request refused from its head: what the client still sends of its body is read and
# dropped for this long, so that it sees our answer rather than a reset.
LINGER_SECONDS = 2.0
SERVER_NAME = "replicator"


class WriteTimeout(Exception):
    """The client did not take a response within the write timeout."""


class Wire:
    """The h11 state of one connection and its streams."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, write_timeout: float
    ) -> None:
        self.connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.reader = reader
        self.writer = writer
        self._write_timeout = write_timeout

    async def next_head(self, limit: asyncio.Timeout, head_seconds: float) -> Any:
        """The next request head (or the end of the connection) within `limit`, which is cut
        to `head_seconds` from the moment the head's first bytes arrive."""
        loop = asyncio.get_running_loop()
        while True:
            event = self.connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(READ_CHUNK_BYTES)
            if data:
                started = loop.time() + head_seconds
                when = limit.when()
                if when is None or started < when:
                    limit.reschedule(started)
            self.connection.receive_data(data)

    async def read_request(self, head: h11.Request, max_body: int) -> Request | Response:
        """The whole request of `head`, or the error response that ends the connection (413)."""
        request = head_of(head)
        length = request.header("content-length")
        too_large = Response.text(413, f"request body is larger than {max_body} bytes")
        if length is not None and length.isdigit() and int(length) > max_body:
            return too_large
        body = bytearray()
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_body:
                    return too_large
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise h11.RemoteProtocolError("the request ended early")
        return replace(request, body=bytes(body))

    async def send(self, response: Response, close: bool, *, head_only: bool = False) -> None:
        """Write `response` (its head alone for a HEAD request), saying `close` when the
        connection ends after it."""
        headers = [
            *response.headers,
            ("content-length", str(len(response.body))),
            ("server", SERVER_NAME),
        ]
        if close:
            headers.append(("connection", "close"))
        await self._write(h11.Response(status_code=response.status, headers=headers))
        if response.body and not head_only:
            await self._write(h11.Data(data=response.body))
        await self._write(h11.EndOfMessage())

    async def discard_unread(self, limit: int) -> None:
        """Drop what the client still sends of a refused request (see `discard_unread`)."""
        await discard_unread(self.reader, self.writer, limit)

    async def _next_event(self) -> Any:
        while True:
            event = self.connection.next_event()
            if event is h11.NEED_DATA:
                if self.connection.they_are_waiting_for_100_continue:
                    await self._write(h11.InformationalResponse(status_code=100, headers=[]))
                self.connection.receive_data(await self.reader.read(READ_CHUNK_BYTES))
                continue
            return event

    async def _write(self, event: Any) -> None:
        data = self.connection.send(event)
        if data:
            self.writer.write(data)
            try:
                async with asyncio.timeout(self._write_timeout):
                    await self.writer.drain()
            except TimeoutError:
                raise WriteTimeout from None


async def discard_unread(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int
) -> None:
    """Read and drop what the client still sends of a refused request's body (at most `limit`
    bytes, for at most LINGER_SECONDS), so it reads our answer instead of a reset connection:
    closing a socket with unread data makes the kernel send RST. Nothing is kept."""
    if writer.can_write_eof():
        writer.write_eof()
    dropped = 0
    with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):
        async with asyncio.timeout(LINGER_SECONDS):
            while dropped <= limit and (data := await reader.read(READ_CHUNK_BYTES)):
                dropped += len(data)
