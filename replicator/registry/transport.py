"""An httpx transport for registries: HTTP/1.1 on asyncio streams and h11, pooled per origin.

httpcore made the registry client CPU-bound in our own process: its pool re-scans every
connection on every request (encode/httpcore#928), asks anyio for socket details to see whether
an idle connection expired, and reads 64 KiB at a time under anyio timeouts. This transport does
only what registries need: HTTP/1.1, one pool per (scheme, host, port) holding idle connections
in a LIFO deque, a semaphore bounding connections per origin, 1 MiB socket reads, and one retry
on a fresh connection when a reused one turns out to have been closed by the server.

Errors are httpx's (ConnectError, ReadTimeout, RemoteProtocolError, ...) with the request
attached and the library exception as `__cause__`, so callers classify TLS failures as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping

import h11
import httpx

# One socket read takes up to this much: each read has a fixed cost (a timeout, h11 events, an
# iterator hop), so a blob moves in few large reads; memory stays bounded by it per stream.
SOCKET_READ_BYTES = 1024 * 1024
# StreamReader stops reading the socket past twice its limit; at the read size, one read finds
# a full buffer while the socket keeps the stream going.
STREAM_LIMIT = SOCKET_READ_BYTES
# drain() waits once this much is queued for the socket: an upload chunk (up to a read of the
# source, 1 MiB) is queued whole instead of waiting in 64 KiB steps (asyncio's default).
WRITE_HIGH_WATER = 2 * SOCKET_READ_BYTES
# Idle connections older than this are closed rather than reused: httpx's default keep-alive
# expiry, shorter than the idle timeouts of common registry front ends (nginx 75 s, Go 90 s).
KEEPALIVE_EXPIRY_SECONDS = 5.0
# Request pieces below this are joined into one socket write (head and a small body together).
COALESCE_BYTES = 64 * 1024
# aclose() waits this long per connection for the close to finish (a TLS close_notify); a peer
# that never answers must not hold up shutdown.
CLOSE_WAIT_SECONDS = 1.0
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class _Connection:
    """One TCP (or TLS) connection and its h11 state."""

    __slots__ = ("h11", "idle_since", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.reused = False
        self.idle_since = 0.0

    def closed_by_peer(self) -> bool:
        """The server closed the connection (or it failed) while it sat idle."""
        return self.reader.at_eof() or self.writer.transport.is_closing()

    def close(self) -> None:
        self.writer.close()


class _OriginPool:
    """Idle connections of one origin, newest last, and the bound on its connections."""

    __slots__ = ("idle", "slots")

    def __init__(self, max_connections: int) -> None:
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(max_connections)


class _StaleConnection(Exception):
    """A reused connection failed before any byte of the response: the server had closed it."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class RegistryTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive, at most `max_connections` per origin; TLS with `ssl_context`."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_SECONDS,
    ) -> None:
        self._ssl = ssl_context
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._pools: dict[Origin, _OriginPool] = {}
        self._live: set[_Connection] = set()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        if self._closed:
            raise httpx.ConnectError("the transport is closed", request=request)
        origin = (scheme, url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[scheme])
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _OriginPool(self._max_connections)
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        await _acquire(pool, timeouts.get("pool"), request)
        try:
            connection = self._take_idle(pool)
            if connection is None:
                connection = await self._connect(origin, request, timeouts.get("connect"))
            try:
                return await self._exchange(pool, connection, request, timeouts)
            except _StaleConnection as stale:
                # Only a body that can be sent again is retried, as httpcore does.
                if not isinstance(request.stream, httpx.ByteStream):
                    raise stale.error from stale.error.__cause__
            connection = await self._connect(origin, request, timeouts.get("connect"))
            return await self._exchange(pool, connection, request, timeouts)
        except BaseException:
            pool.slots.release()
            raise

    async def aclose(self) -> None:
        """Close every connection, idle or in use; later requests fail with ConnectError."""
        self._closed = True
        live, self._live = self._live, set()
        self._pools.clear()
        for connection in live:
            connection.close()
        for connection in live:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                    await connection.writer.wait_closed()

    def _take_idle(self, pool: _OriginPool) -> _Connection | None:
        idle = pool.idle
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since > self._keepalive_expiry:
                # The newest idle connection expired, so did every older one.
                idle.append(connection)
                while idle:
                    self._discard(idle.pop())
                return None
            if connection.closed_by_peer():
                self._discard(connection)
                continue
            return connection
        return None

    def _discard(self, connection: _Connection) -> None:
        self._live.discard(connection)
        connection.close()

    def _release(self, pool: _OriginPool, connection: _Connection, *, complete: bool) -> None:
        """Back to the idle deque when the exchange ended cleanly and h11 allows another."""
        state = connection.h11
        if (
            complete
            and not self._closed
            and state.our_state is h11.DONE
            and state.their_state is h11.DONE
            and not state.trailing_data[0]
        ):
            state.start_next_cycle()
            connection.reused = True
            connection.idle_since = asyncio.get_running_loop().time()
            pool.idle.append(connection)
        else:
            self._discard(connection)
        pool.slots.release()

    async def _connect(
        self, origin: Origin, request: httpx.Request, seconds: float | None
    ) -> _Connection:
        scheme, host, port = origin
        context = self._ssl if scheme == "https" else None
        try:
            async with asyncio.timeout(seconds):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                    limit=STREAM_LIMIT,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"connecting to {host}:{port} timed out", request=request
            ) from exc
        except OSError as exc:  # ssl.SSLError included: a refused handshake
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        connection = _Connection(reader, writer)
        if self._closed:
            connection.close()
            raise httpx.ConnectError("the transport is closed", request=request)
        self._live.add(connection)
        return connection

    async def _exchange(
        self,
        pool: _OriginPool,
        connection: _Connection,
        request: httpx.Request,
        timeouts: Mapping[str, float | None],
    ) -> httpx.Response:
        """Send `request` and read the response head; the body stays on the connection."""
        read_timeout = timeouts.get("read")
        try:
            write_error = await _send_request(connection, request, timeouts.get("write"))
            response = await _receive_head(connection, request, read_timeout, write_error)
        except BaseException:
            self._discard(connection)
            raise
        stream = _ResponseStream(self, pool, connection, request, read_timeout)
        return httpx.Response(
            response.status_code,
            headers=response.headers.raw_items(),
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
        )


class _ResponseStream(httpx.AsyncByteStream):
    """The body, read from the connection; the connection goes back to the pool at its end."""

    def __init__(
        self,
        transport: RegistryTransport,
        pool: _OriginPool,
        connection: _Connection,
        request: httpx.Request,
        read_timeout: float | None,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._connection: _Connection | None = connection
        self._request = request
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        state = connection.h11
        try:
            while True:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    state.receive_data(await _read(connection, self._read_timeout))
                elif type(event) is h11.Data:
                    yield bytes(event.data)
                elif type(event) is h11.EndOfMessage:
                    self._finish(complete=True)
                    return
                else:
                    break
        except BaseException as exc:
            self._finish(complete=False)
            mapped = _map_read_error(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc
        self._finish(complete=False)
        raise httpx.RemoteProtocolError(
            f"unexpected {type(event).__name__} in a response body", request=self._request
        )

    async def aclose(self) -> None:
        self._finish(complete=False)

    def _finish(self, *, complete: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._transport._release(self._pool, connection, complete=complete)


async def _acquire(pool: _OriginPool, seconds: float | None, request: httpx.Request) -> None:
    if seconds is None or not pool.slots.locked():
        await pool.slots.acquire()
        return
    try:
        async with asyncio.timeout(seconds):
            await pool.slots.acquire()
    except TimeoutError as exc:
        raise httpx.PoolTimeout("no connection became free in time", request=request) from exc


async def _read(connection: _Connection, seconds: float | None) -> bytes:
    if seconds is None:
        return await connection.reader.read(SOCKET_READ_BYTES)
    async with asyncio.timeout(seconds):
        return await connection.reader.read(SOCKET_READ_BYTES)


async def _drain(writer: asyncio.StreamWriter, pieces: list[bytes], seconds: float | None) -> None:
    writer.writelines(pieces)
    pieces.clear()
    async with asyncio.timeout(seconds):
        await writer.drain()


async def _send_request(
    connection: _Connection, request: httpx.Request, seconds: float | None
) -> OSError | None:
    """Write the request; an OSError from the socket is returned, not raised, so the caller can
    still read a response the server sent before closing (a 401 or 413 cutting an upload short).
    Errors of the body iterator (a source read failing mid-copy) propagate unchanged."""
    state, writer = connection.h11, connection.writer
    headers = request.headers.raw
    stream = request.stream
    framed = "content-length" in request.headers or "transfer-encoding" in request.headers
    if not framed and not isinstance(stream, httpx.ByteStream):
        headers = [*headers, (b"Transfer-Encoding", b"chunked")]
    try:
        pieces = [
            state.send(
                h11.Request(method=request.method, target=request.url.raw_path, headers=headers)
            )
            or b""
        ]
        pending = len(pieces[0])
        assert isinstance(stream, httpx.AsyncByteStream), "an async client sends async streams"
        async for chunk in stream:
            if not chunk:
                continue
            data = state.send_with_data_passthrough(h11.Data(data=chunk)) or []
            pieces.extend(data)
            pending += len(chunk)
            if pending >= COALESCE_BYTES:
                await _drain(writer, pieces, seconds)
                pending = 0
        pieces.append(state.send(h11.EndOfMessage()) or b"")
        await _drain(writer, pieces, seconds)
    except TimeoutError as exc:
        raise httpx.WriteTimeout("sending the request timed out", request=request) from exc
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc), request=request) from exc
    except OSError as exc:
        return exc
    return None


async def _receive_head(
    connection: _Connection,
    request: httpx.Request,
    seconds: float | None,
    write_error: OSError | None,
) -> h11.Response:
    """Read up to the final response head, skipping 1xx responses."""
    state = connection.h11
    received = False
    while True:
        try:
            event = state.next_event()
            if event is h11.NEED_DATA:
                data = await _read(connection, seconds)
                if not data and not received:
                    raise _nothing_received(connection, request, write_error, None)
                received = True
                state.receive_data(data)
                continue
        except (OSError, TimeoutError) as exc:
            # TimeoutError is an OSError, but a slow server did not close the connection.
            if not isinstance(exc, TimeoutError) and not received:
                raise _nothing_received(connection, request, write_error, exc) from exc
            mapped = _map_read_error(exc, request)
            assert mapped is not None
            raise mapped from exc
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        if type(event) is h11.Response:
            return event
        if type(event) is not h11.InformationalResponse:
            raise httpx.RemoteProtocolError(
                f"unexpected {type(event).__name__} before the response", request=request
            )


def _nothing_received(
    connection: _Connection,
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
        return _StaleConnection(error)
    return error


def _map_read_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError | None:
    """httpx's exception for a failed read, or None to let `exc` propagate as it is."""
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout("reading the response timed out", request=request)
    if isinstance(exc, OSError):  # ssl.SSLError included: an alert after the handshake
        return httpx.ReadError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, h11.RemoteProtocolError):
        return httpx.RemoteProtocolError(str(exc), request=request)
    return None
