"""An httpx transport for registries: HTTP/1.1 on asyncio streams, pooled per origin.

httpcore made the registry client CPU-bound in our own process: its pool re-scans every
connection on every request (encode/httpcore#928), asks anyio for socket details to see whether
an idle connection expired, and reads 64 KiB at a time under anyio timeouts. This transport does
only what registries need: HTTP/1.1, one pool per (scheme, host, port) holding idle connections
in a LIFO deque, a semaphore bounding connections per origin, 1 MiB socket reads, and one retry
on a fresh connection when a reused one turns out to have been closed by the server. Message
framing is `http11`'s (it replaced h11, which cost a third of our CPU per request).

Errors are httpx's (ConnectError, ReadTimeout, RemoteProtocolError, ...) with the request
attached and the library exception as `__cause__`, so callers classify TLS failures as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping

import httpx

from replicator.registry.http import http11, proxy, wire
from replicator.registry.http.http11 import BodyPlan, Framing
from replicator.registry.http.proxy import ProxyEndpoint, ProxySettings

# StreamReader stops reading the socket past twice its limit; at the read size, one read finds
# a full buffer while the socket keeps the stream going.
STREAM_LIMIT = wire.SOCKET_READ_BYTES
# drain() waits once this much is queued for the socket: an upload chunk (up to a read of the
# source, 1 MiB) is queued whole instead of waiting in 64 KiB steps (asyncio's default).
WRITE_HIGH_WATER = 2 * wire.SOCKET_READ_BYTES
# Idle connections older than this are closed rather than reused: httpx's default keep-alive
# expiry, shorter than the idle timeouts of common registry front ends (nginx 75 s, Go 90 s).
KEEPALIVE_EXPIRY_SECONDS = 5.0
# aclose() waits this long per connection for the close to finish (a TLS close_notify); a peer
# that never answers must not hold up shutdown.
CLOSE_WAIT_SECONDS = 1.0
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class _OriginPool:
    """Idle connections of one origin, newest last, and the bound on its connections."""

    __slots__ = ("idle", "proxy", "slots")

    def __init__(self, max_connections: int, proxy: ProxyEndpoint | None) -> None:
        self.idle: deque[wire.Connection] = deque()
        self.slots = asyncio.Semaphore(max_connections)
        self.proxy = proxy  # where this origin's connections go instead, if anywhere


class RegistryTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive, at most `max_connections` per origin; TLS with the context
    `tls()` returns, asked for at the first HTTPS connection only; through the proxy that
    `proxies` names for an origin, if any."""

    def __init__(
        self,
        *,
        tls: Callable[[], ssl.SSLContext],
        max_connections: int,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_SECONDS,
        proxies: ProxySettings | None = None,
    ) -> None:
        self._tls = tls
        self._proxies = proxies or ProxySettings()
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._pools: dict[Origin, _OriginPool] = {}
        self._live: set[wire.Connection] = set()
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
            route = self._proxies.route(*origin)
            pool = self._pools[origin] = _OriginPool(self._max_connections, route)
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        await _acquire(pool, timeouts.get("pool"), request)
        try:
            connection = self._take_idle(pool)
            if connection is None:
                connection = await self._connect(origin, pool.proxy, request, timeouts)
            try:
                return await self._exchange(pool, connection, request, timeouts)
            except wire.StaleConnection as stale:
                # Only a body that can be sent again is retried, as httpcore does.
                if not isinstance(request.stream, httpx.ByteStream):
                    raise stale.error from stale.error.__cause__
            connection = await self._connect(origin, pool.proxy, request, timeouts)
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

    def _take_idle(self, pool: _OriginPool) -> wire.Connection | None:
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

    def _discard(self, connection: wire.Connection) -> None:
        self._live.discard(connection)
        connection.close()

    def _release(self, pool: _OriginPool, connection: wire.Connection, *, reusable: bool) -> None:
        """Back to the idle deque when the exchange ended cleanly and the server keeps the
        connection open."""
        if reusable and not self._closed:
            connection.reused = True
            connection.idle_since = asyncio.get_running_loop().time()
            pool.idle.append(connection)
        else:
            self._discard(connection)
        pool.slots.release()

    async def _connect(
        self,
        origin: Origin,
        via: ProxyEndpoint | None,
        request: httpx.Request,
        timeouts: Mapping[str, float | None],
    ) -> wire.Connection:
        scheme, host, port = origin
        context = self._tls() if scheme == "https" else None
        where = f"{host}:{port}" if via is None else f"{host}:{port} through proxy {via}"
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                if via is None:
                    reader, writer = await asyncio.open_connection(
                        host,
                        port,
                        ssl=context,
                        server_hostname=host if context else None,
                        limit=STREAM_LIMIT,
                    )
                else:
                    reader, writer = await _through(via, context, host, port)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {where} timed out", request=request) from exc
        except proxy.TunnelRefused as exc:
            raise httpx.ConnectError(
                f"proxy {via} refused the tunnel to {host}:{port} ({exc.status}"
                f"{': it wants credentials' if exc.status == 407 else ''})",
                request=request,
            ) from exc
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, http11.ProtocolError) as e:
            raise httpx.ConnectError(
                f"proxy {via} answered the tunnel request with something that is not HTTP",
                request=request,
            ) from e
        except OSError as exc:  # ssl.SSLError included: a refused handshake
            message = str(exc) or type(exc).__name__
            raise httpx.ConnectError(
                message if via is None else f"{where}: {message}", request=request
            ) from exc
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        forward = via.headers() if via is not None and context is None else None
        connection = wire.Connection(reader, writer, forward=forward)
        if self._closed:
            connection.close()
            raise httpx.ConnectError("the transport is closed", request=request)
        self._live.add(connection)
        return connection

    async def _exchange(
        self,
        pool: _OriginPool,
        connection: wire.Connection,
        request: httpx.Request,
        timeouts: Mapping[str, float | None],
    ) -> httpx.Response:
        """Send `request` and read the response head; the body stays on the connection."""
        read_timeout = timeouts.get("read")
        try:
            write_error = await wire.send_request(connection, request, timeouts.get("write"))
            head = await wire.receive_head(connection, request, read_timeout, write_error)
            plan = http11.body_plan(request.method, head)
        except http11.ProtocolError as exc:
            self._discard(connection)
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except BaseException:
            self._discard(connection)
            raise
        if write_error is not None or (
            connection.forward is not None and not _proxy_keeps_alive(head)
        ):
            # The server answered before taking the whole body (a 401 or 413): it will close.
            # A forwarding proxy that did not say keep-alive is not trusted to: tinyproxy
            # relays the registry's HTTP/1.1 head, then closes the connection after each
            # request, and a reused one would fail the next (streamed, unreplayable) upload.
            plan = BodyPlan(plan.framing, plan.length, keep_alive=False)
        stream = _ResponseStream(
            self, pool, connection, request, read_timeout=read_timeout, plan=plan
        )
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )


class _ResponseStream(httpx.AsyncByteStream):
    """The body, read from the connection; the connection goes back to the pool at its end."""

    def __init__(
        self,
        transport: RegistryTransport,
        pool: _OriginPool,
        connection: wire.Connection,
        request: httpx.Request,
        *,
        read_timeout: float | None,
        plan: BodyPlan,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._connection: wire.Connection | None = connection
        self._request = request
        self._read_timeout = read_timeout
        self._plan = plan

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        plan, seconds = self._plan, self._read_timeout
        try:
            if plan.framing is Framing.LENGTH:
                async for data in wire.length_body(connection, plan.length, seconds):
                    yield data
            elif plan.framing is Framing.CHUNKED:
                async for data in wire.chunked_body(connection, seconds):
                    yield data
            elif plan.framing is Framing.CLOSE:
                while data := await wire.read(connection, seconds):
                    yield data
        except BaseException as exc:
            self._finish(reusable=False)
            mapped = wire.map_read_error(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc
        self._finish(reusable=plan.keep_alive and plan.framing is not Framing.CLOSE)

    async def aclose(self) -> None:
        self._finish(reusable=False)

    def _finish(self, *, reusable: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._transport._release(self._pool, connection, reusable=reusable)


def _proxy_keeps_alive(head: http11.ResponseHead) -> bool:
    """Whether a forwarding proxy promised to keep the connection (`Connection: keep-alive` or
    the older `Proxy-Connection: keep-alive`, as squid sends)."""
    said = b",".join(head.values(b"connection") + head.values(b"proxy-connection")).lower()
    return b"keep-alive" in said


async def _through(
    via: ProxyEndpoint, context: ssl.SSLContext | None, host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the proxy; for TLS, tunnelled with CONNECT and TLS started inside."""
    reader, writer = await asyncio.open_connection(via.host, via.port, limit=STREAM_LIMIT)
    if context is None:
        return reader, writer
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        await proxy.open_tunnel(reader, writer, via, authority)
        await writer.start_tls(context, server_hostname=host)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _acquire(pool: _OriginPool, seconds: float | None, request: httpx.Request) -> None:
    if seconds is None or not pool.slots.locked():
        await pool.slots.acquire()
        return
    try:
        async with asyncio.timeout(seconds):
            await pool.slots.acquire()
    except TimeoutError as exc:
        raise httpx.PoolTimeout("no connection became free in time", request=request) from exc
