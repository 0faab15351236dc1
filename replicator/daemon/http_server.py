"""A small asyncio HTTP/1.1 server on h11: a routing table of (method, path prefix) -> handler.

It serves the webhook bridge and the daemon's /healthz, /readyz, /metrics and status API:
few routes, small bodies, trusted-network clients. It does keep-alive, caps request bodies
(413), bounds how long a client may take to send a request and to take a response (slow
clients cannot pin a connection), caps connections in total and per client (http_admission),
lets a route refuse a request from its head before the body is read (`Route.admit`: the
token check), and closes gracefully: idle connections at once, busy ones after their response.
What handlers see and answer (Request, Response, Route) is in http_messages; the h11 framing
of one connection (heads, bodies, writes within a deadline) in http_wire.

    routes = [Route("POST", "/events/", handle_event), Route("GET", "/healthz", healthz)]
    async with HttpServer(routes, host="127.0.0.1", port=9479) as server:
        await stop.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import h11

from replicator.daemon.http_admission import REFUSAL, Admission, Place
from replicator.daemon.http_messages import Request, Response, Route, head_of
from replicator.daemon.http_wire import READ_CHUNK_BYTES, Wire, WriteTimeout, discard_unread
from replicator.errors import ConfigError
from replicator.logs import get_logger

log = get_logger(__name__)
# The config key that sets each server's address, named when it cannot listen.
LISTEN_KEYS = {"api": "http.listen", "bridge": "bridge.listen"}

# Request bodies above this are refused with 413: the largest thing we accept is a webhook
# envelope, a few KiB (the bridge passes payloads.MAX_PAYLOAD_BYTES).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# A whole request (head and body) must arrive within this: loopback and LAN clients send a
# few KiB in milliseconds, and a slower one is holding a connection hostage.
REQUEST_TIMEOUT_SECONDS = 10.0
# An idle keep-alive connection is closed after this. Go's HTTP client (distribution's
# notifications) keeps idle connections 90 s and reconnects transparently when we close first.
IDLE_TIMEOUT_SECONDS = 30.0
# A handler gets this long before the client gets a 503: our handlers wait at most for a
# broker PUBACK or a journal query.
HANDLER_TIMEOUT_SECONDS = 30.0
# Once a request's first bytes arrive, its head must be whole within this: every webhook sender
# writes its head (a few hundred bytes) at once, and 3 s rides out a lossy link's retransmits. A
# client dribbling its head would otherwise hold one of its address's places until the idle
# timeout, and 32 of them shut out a registry sending from the same address (behind one NAT).
HEAD_TIMEOUT_SECONDS = 3.0
# A response must be taken by the client within this (our answers are at most a few hundred
# KiB): one that never reads would otherwise hold its connection in drain() for ever.
WRITE_TIMEOUT_SECONDS = 10.0
# On close, busy connections get this long to finish their response before being cut.
CLOSE_GRACE_SECONDS = 5.0
# Answers that refuse a request's credentials: a reserved place's connection so answered was
# not an authenticated sender's after all.
_CREDENTIALS_REFUSED = frozenset({401, 403})
# A connection in a reserved place whose head is not an authenticated sender's is told this.
_RESERVED_REFUSAL = Response(
    503,
    b"too many connections; retry\n",
    (("content-type", "text/plain; charset=utf-8"), ("retry-after", "1")),
)


@dataclass(slots=True, eq=False)
class _ConnectionState:
    busy: bool = False
    closing: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    client: str = ""
    place: Place = Place.SHARED
    proven: bool = False  # a reserved place's connection's first request was answered

    @property
    def unproven(self) -> bool:
        return self.place is Place.RESERVED and not self.proven


class HttpServer:
    """Serves `routes` on host:port (port 0: any free port, then read `.port`)."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body: int = DEFAULT_MAX_BODY_BYTES,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        name: str = "http",
        tls: ssl.SSLContext | None = None,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
        admission: Admission | None = None,
    ) -> None:
        self.routes = tuple(routes)
        self._tls = tls
        self.host = host
        self.port = port
        self.name = name
        self._max_body = max_body
        self._request_timeout = request_timeout
        self._idle_timeout = idle_timeout
        self._write_timeout = write_timeout
        self.admission = admission or Admission()
        self._lingering = 0  # refused connections being told why
        self._server: asyncio.Server | None = None
        self._connections: set[_ConnectionState] = set()

    async def __aenter__(self) -> HttpServer:
        """Start listening; `.port` is the bound port afterwards."""
        try:
            self._server = await asyncio.start_server(
                self._serve,
                self.host,
                self.port,
                ssl=self._tls,
                # A TLS client gets as long for its handshake as a plain one for its request.
                ssl_handshake_timeout=self._request_timeout if self._tls else None,
            )
        except OSError as exc:
            key = LISTEN_KEYS.get(self.name, "its listen address")
            raise ConfigError(
                f"the {self.name} server cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or exc}: stop what holds it (another replicator?), or set "
                f"{key} to another address"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "http_listening", server=self.name, host=self.host, port=self.port, tls=bool(self._tls)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop accepting, close idle connections, let busy ones finish within the grace."""
        await self.close()

    async def close(self, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Graceful close (see the module docstring); idempotent."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()
        for state in list(self._connections):
            state.closing = True
            if not state.busy and state.task is not None:
                state.task.cancel()
        tasks = [s.task for s in self._connections if s.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        log.info("http_closed", server=self.name)

    def _route(self, method: str, path: str) -> Route | Response:
        candidates = [r for r in self.routes if r.matches_path(path)]
        if not candidates:
            return Response.text(404, f"no route for {path}")
        for route in sorted(candidates, key=lambda r: len(r.path), reverse=True):
            if route.method == method:
                return route
        allowed = ", ".join(sorted({r.method for r in candidates}))
        return Response.text(405, f"{method} not allowed here", ("allow", allowed))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        place = self.admission.admit(client)
        if place is None:
            log.debug("http_connection_refused", server=self.name, client=client)
            # Told without waiting (the answer fits any socket buffer), then closed. Its request
            # is read and dropped a moment so the client sees the 503, not a reset; beyond as
            # many lingering refusals as connections allowed, closed at once.
            writer.write(REFUSAL)
            if self._lingering < self.admission.max_connections:
                self._lingering += 1
                try:
                    await discard_unread(reader, writer, READ_CHUNK_BYTES)
                finally:
                    self._lingering -= 1
            writer.close()
            return
        state = _ConnectionState(task=asyncio.current_task(), client=client, place=place)
        try:
            await self._serve_admitted(reader, writer, state)
        finally:
            self.admission.release(client, place, proven=state.proven)

    async def _serve_admitted(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _ConnectionState
    ) -> None:
        self._connections.add(state)
        wire = Wire(reader, writer, self._write_timeout)
        try:
            while not state.closing:
                keep_going = await self._one_exchange(wire, state)
                if not keep_going or wire.connection.our_state is not h11.DONE:
                    break
                wire.connection.start_next_cycle()
        except asyncio.CancelledError:
            if not state.closing:
                raise
        except (ConnectionError, ssl.SSLError, h11.LocalProtocolError) as exc:
            log.debug("http_connection_error", server=self.name, error=str(exc))
        except WriteTimeout:
            log.info("http_write_timeout", server=self.name, seconds=self._write_timeout)
            writer.transport.abort()
        finally:
            self._connections.discard(state)
            writer.close()
            # A client that reads nothing would keep close() flushing for ever: cut it.
            with contextlib.suppress(ConnectionError, asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(self._write_timeout):
                    await writer.wait_closed()
            if not writer.transport.is_closing() or writer.transport.get_write_buffer_size():
                writer.transport.abort()

    async def _one_exchange(self, wire: Wire, state: _ConnectionState) -> bool:
        """Read one request and answer it; False when the connection is to be closed."""
        # A reserved place's first head must come within the head deadline from the connection.
        wait = HEAD_TIMEOUT_SECONDS if state.unproven else self._idle_timeout
        try:
            async with asyncio.timeout(wait) as limit:
                head = await wire.next_head(limit, HEAD_TIMEOUT_SECONDS)
            if not isinstance(head, h11.Request):
                return False  # the client closed an idle connection
            if state.unproven and not self._trusted(head):
                await wire.send(_RESERVED_REFUSAL, True)
                await wire.discard_unread(self._max_body)
                return False
            state.busy = True
            async with asyncio.timeout(self._request_timeout):
                refused = self._refusal(head)
                outcome = refused or await wire.read_request(head, self._max_body)
        except TimeoutError:
            if wire.connection.our_state is h11.SEND_RESPONSE:
                await wire.send(Response.text(408, "request timeout"), True)
            return False
        except h11.RemoteProtocolError as exc:
            if wire.connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await wire.send(Response.text(exc.error_status_hint, str(exc)), True)
            return False
        if isinstance(outcome, Response):
            await wire.send(outcome, True)
            if outcome is refused:
                await wire.discard_unread(self._max_body)
            return False
        started = time.monotonic()
        response = await self._dispatch(outcome)
        if state.unproven:
            # A head can only claim what the body proves (an HMAC signature is checked against
            # the body): the place stays its address's one unproven place until the request is
            # answered, and a refusal of its credentials ends the connection.
            if response.status in _CREDENTIALS_REFUSED:
                await wire.send(response, True)
                return False
            state.proven = True
            self.admission.proven(state.client)
        await wire.send(response, state.closing, head_only=outcome.method == "HEAD")
        log.debug(
            "http_request",
            server=self.name,
            method=outcome.method,
            path=outcome.path,
            status=response.status,
            seconds=round(time.monotonic() - started, 4),
        )
        state.busy = False
        return True

    def _trusted(self, head: h11.Request) -> bool:
        """Whether the head is an authenticated sender's, by its route (a reserved place)."""
        request = head_of(head)
        route = self._route(request.method, request.path)
        return (
            not isinstance(route, Response) and route.trusts is not None and route.trusts(request)
        )

    def _refusal(self, head: h11.Request) -> Response | None:
        """The answer to a request its route refuses from the head alone (body unread)."""
        request = head_of(head)
        route = self._route(request.method, request.path)
        if isinstance(route, Response) or route.admit is None:
            return None
        return route.admit(request)

    async def _dispatch(self, request: Request) -> Response:
        route = self._route(request.method, request.path)
        if isinstance(route, Response):
            return route
        try:
            async with asyncio.timeout(HANDLER_TIMEOUT_SECONDS):
                return await route.handler(request)
        except TimeoutError:
            log.warning("http_handler_timeout", server=self.name, path=request.path)
            return Response.text(503, "the request took too long; retry")
        except Exception:
            log.exception("http_handler_failed", server=self.name, path=request.path)
            return Response.text(500, "internal error")
