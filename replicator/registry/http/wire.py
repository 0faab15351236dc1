"""One HTTP/1.1 exchange on a connection: write a request, read a response head and body.

The socket side of `http11`'s framing, on asyncio streams, with the errors httpx's callers
expect (ConnectError, ReadTimeout, RemoteProtocolError, ...). The pool around it is transport.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from replicator.registry.http import http11

# One socket read takes up to this much: each read has a fixed cost (a timeout, an
# iterator hop), so a blob moves in few large reads; memory stays bounded by it per stream.
SOCKET_READ_BYTES = 1024 * 1024
# Request pieces below this are joined into one socket write (head and a small body together).
COALESCE_BYTES = 64 * 1024


class Connection:
    """One TCP (or TLS) connection."""

    __slots__ = ("forward", "idle_since", "reader", "reused", "writer")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        forward: tuple[tuple[bytes, bytes], ...] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False
        self.idle_since = 0.0
        # Set on a connection to an HTTP proxy forwarding plain-http requests: requests go in
        # absolute form (the full URL as target) with these extra headers (Proxy-Authorization).
        self.forward = forward

    def closed_by_peer(self) -> bool:
        """The server closed the connection (or it failed) while it sat idle."""
        return self.reader.at_eof() or self.writer.transport.is_closing()

    def close(self) -> None:
        self.writer.close()


class StaleConnection(Exception):
    """A reused connection failed before any byte of the response: the server had closed it."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


async def length_body(
    connection: Connection, length: int, seconds: float | None
) -> AsyncIterator[bytes]:
    """Exactly `length` bytes, in reads of at most SOCKET_READ_BYTES."""
    remaining = length
    while remaining:
        data = await read(connection, seconds, min(remaining, SOCKET_READ_BYTES))
        if not data:
            raise http11.ProtocolError(
                f"the server closed the connection {length - remaining} bytes into a body of "
                f"{length}"
            )
        remaining -= len(data)
        yield data


async def chunked_body(connection: Connection, seconds: float | None) -> AsyncIterator[bytes]:
    """The data of a chunked body, each chunk streamed in reads (a chunk may be gigabytes)."""
    while True:
        size = http11.parse_chunk_size(await _line(connection, seconds))
        if size == 0:
            while await _line(connection, seconds):
                pass  # trailer fields: not used by registries, skipped
            return
        async for data in length_body(connection, size, seconds):
            yield data
        if await _line(connection, seconds):
            raise http11.ProtocolError("a chunk is longer than its announced size")


async def read(
    connection: Connection, seconds: float | None, size: int = SOCKET_READ_BYTES
) -> bytes:
    if seconds is None:
        return await connection.reader.read(size)
    async with asyncio.timeout(seconds):
        return await connection.reader.read(size)


async def _until(connection: Connection, seconds: float | None, separator: bytes) -> bytes:
    """Bytes up to and including `separator`; ProtocolError when the connection ends first or
    the stream's buffer limit is reached without it."""
    try:
        async with asyncio.timeout(seconds):
            return await connection.reader.readuntil(separator)
    except asyncio.IncompleteReadError as exc:
        raise http11.ProtocolError(
            "the server closed the connection in the middle of a message"
        ) from exc
    except asyncio.LimitOverrunError as exc:
        raise http11.ProtocolError("a response line or head is too long") from exc


async def _line(connection: Connection, seconds: float | None) -> bytes:
    """One CR LF terminated line of a chunked body, without its CR LF."""
    line = await _until(connection, seconds, http11.LINE_END)
    if len(line) > http11.MAX_CHUNK_LINE_BYTES:
        raise http11.ProtocolError("a chunk-size or trailer line is too long")
    return line[:-2]


async def _drain(writer: asyncio.StreamWriter, pieces: list[bytes], seconds: float | None) -> None:
    writer.writelines(pieces)
    pieces.clear()
    async with asyncio.timeout(seconds):
        await writer.drain()


async def send_request(
    connection: Connection, request: httpx.Request, seconds: float | None
) -> OSError | None:
    """Write the request; an OSError from the socket is returned, not raised, so the caller can
    still read a response the server sent before closing (a 401 or 413 cutting an upload short).
    Errors of the body iterator (a source read failing mid-copy) propagate unchanged."""
    writer = connection.writer
    headers = request.headers.raw
    stream = request.stream
    declared = request.headers.get("content-length")
    chunked = declared is None and (
        "transfer-encoding" in request.headers or not isinstance(stream, httpx.ByteStream)
    )
    if chunked and "transfer-encoding" not in request.headers:
        headers = [*headers, (b"Transfer-Encoding", b"chunked")]
    length = int(declared) if declared is not None and declared.isdigit() else None
    sent = 0
    target = request.url.raw_path
    if connection.forward is not None:
        target = str(request.url).encode("ascii")
        headers = [*headers, *connection.forward]
    try:
        head = http11.encode_request_head(request.method.encode(), target, headers)
        pieces = [head]
        pending = len(head)
        assert isinstance(stream, httpx.AsyncByteStream), "an async client sends async streams"
        async for data in stream:
            if not data:
                continue
            sent += len(data)
            _check_length(sent, length, final=False)
            pieces.extend(http11.chunk(data) if chunked else (data,))
            pending += len(data)
            if pending >= COALESCE_BYTES:
                await _drain(writer, pieces, seconds)
                pending = 0
        _check_length(sent, length, final=True)
        if chunked:
            pieces.append(http11.LAST_CHUNK)
        await _drain(writer, pieces, seconds)
    except TimeoutError as exc:
        raise httpx.WriteTimeout("sending the request timed out", request=request) from exc
    except http11.ProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc), request=request) from exc
    except OSError as exc:
        return exc
    return None


def _check_length(sent: int, length: int | None, *, final: bool) -> None:
    """Refuse a body longer than its Content-Length, or, at its end, shorter (the server would
    wait for the rest until its timeout)."""
    if length is not None and (sent > length or (final and sent < length)):
        raise http11.ProtocolError(f"a body of {sent} bytes for a Content-Length of {length}")


async def receive_head(
    connection: Connection,
    request: httpx.Request,
    seconds: float | None,
    write_error: OSError | None,
) -> http11.ResponseHead:
    """Read up to the final response head, skipping 1xx responses."""
    received = False
    while True:
        try:
            async with asyncio.timeout(seconds):
                data = await connection.reader.readuntil(http11.HEAD_END)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and not received:
                raise _nothing_received(connection, request, write_error, None) from None
            raise httpx.RemoteProtocolError(
                "the server closed the connection in the middle of a response head",
                request=request,
            ) from exc
        except asyncio.LimitOverrunError as exc:
            message = "the response head is too long"
            raise httpx.RemoteProtocolError(message, request=request) from exc
        except (OSError, TimeoutError) as exc:
            # TimeoutError is an OSError, but a slow server did not close the connection.
            if not isinstance(exc, TimeoutError) and not received:
                raise _nothing_received(connection, request, write_error, exc) from exc
            mapped = map_read_error(exc, request)
            assert mapped is not None
            raise mapped from exc
        received = True
        head = http11.parse_response_head(data)
        if head.status >= 200:
            return head
        if head.status == 101:
            raise httpx.RemoteProtocolError("unexpected 101 Switching Protocols", request=request)


def _nothing_received(
    connection: Connection,
    request: httpx.Request,
    write_error: OSError | None,
    read_error: OSError | None,
) -> Exception:
    """The error for a connection that ended before any byte of a response; a stale-connection
    signal when the connection was reused (the server closed it while it was idle)."""
    error: httpx.TransportError
    if write_error is not None:
        error = httpx.WriteError(str(write_error) or type(write_error).__name__, request=request)
        error.__cause__ = write_error
    elif read_error is not None:
        error = httpx.ReadError(str(read_error) or type(read_error).__name__, request=request)
        error.__cause__ = read_error
    else:
        error = httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )
    if connection.reused:
        return StaleConnection(error)
    return error


def map_read_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError | None:
    """httpx's exception for a failed read, or None to let `exc` propagate as it is."""
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout("reading the response timed out", request=request)
    if isinstance(exc, OSError):  # ssl.SSLError included: an alert after the handshake
        return httpx.ReadError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, http11.ProtocolError):
        return httpx.RemoteProtocolError(str(exc), request=request)
    return None
