"""A small HTTP/1.1 server on a free loopback port whose answer each path chooses.

It counts accepted and concurrently open connections, and misbehaves on request: answers in
timed pieces, stalls, resets a connection mid-body, closes idle connections, or answers only the
first request of each connection. Used to test replicator.registry.http.transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from types import TracebackType

import h11

from tests.support.ports import free_port

# Pieces of the /pieces answer and the pause between them, long enough that each piece reaches
# the client in its own read.
PIECES = 5
PIECE = b"p" * 1000
PIECE_PAUSE_SECONDS = 0.02
# How long /slow and /wait keep the client waiting.
SLOW_SECONDS = 2.0
WAIT_SECONDS = 0.02
# The Basic credentials /basic wants: alice:s3cret.
BASIC_USER = "Basic YWxpY2U6czNjcmV0"
# /endless writes its body in pieces of this size, for ever.
ENDLESS_PIECE = b'"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",' * 2000
# /reset declares this body length and sends only the first bytes of it.
RESET_DECLARED = 100_000


class ScriptedServer:
    """Answers by path: /hello, /echo, /pieces, /slow, /wait, /stall, /reset, /close, /early,
    /redirect?to=URL, /endless and /endless-error (a body that never ends, 200 or 500), and for
    auth: /challenge?realm=URL (401 Bearer with that realm until "Bearer t" is sent), /basic
    (401 Basic until `BASIC_USER` is sent), /token (records the Authorization header it got
    and answers token "t") and /location?to=URL (202 with that Location)."""

    def __init__(
        self,
        *,
        idle_close_seconds: float | None = None,
        answer_once: bool = False,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.idle_close_seconds = idle_close_seconds
        self.answer_once = answer_once
        self.tls = tls
        self.port = free_port()
        self.accepts = 0
        self.open = 0
        self.endless_sent = 0  # body bytes /endless and /endless-error wrote
        self.token_requests: list[str] = []  # the Authorization header of each /token request
        self.max_open = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self.tls)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._closing.set()
        for writer in self._writers:
            writer.transport.abort()
        async with asyncio.timeout(SLOW_SECONDS * 2):
            while self.open:
                await asyncio.sleep(0.01)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.accepts += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        conn = h11.Connection(h11.SERVER)
        answered = 0
        try:
            while True:
                request = await self._next_request(conn, reader)
                if request is None or (self.answer_once and answered):
                    return
                await self._answer(request, conn, reader, writer)
                answered += 1
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError, TimeoutError):
            return
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()

    async def _next_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> h11.Request | None:
        async with asyncio.timeout(self.idle_close_seconds):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    return event
                else:
                    return None

    async def _answer(
        self,
        request: h11.Request,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        path = request.target.decode()
        if path == "/stall":
            await self._closing.wait()  # never reads the body
            return
        body = await _read_body(conn, reader)
        headers: list[tuple[str, str]] = []
        if request.method == b"HEAD":
            await _respond(writer, conn, [("Content-Length", "5")], [])
            return
        if path == "/echo":
            chunked = any(name == b"transfer-encoding" for name, _ in request.headers)
            headers.append(("X-Framing", "chunked" if chunked else "length"))
            await _respond(writer, conn, headers, [body])
        elif path == "/pieces":
            await _respond(writer, conn, headers, [PIECE] * PIECES, pause=PIECE_PAUSE_SECONDS)
        elif path == "/reset":
            writer.write(
                conn.send(
                    h11.Response(status_code=200, headers=[("Content-Length", str(RESET_DECLARED))])
                )
                or b""
            )
            writer.write(b"r" * 10)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif path.startswith(("/challenge?realm=", "/basic")):
            await self._auth_gate(path, _authorization(request), conn, writer)
        elif path.startswith("/token"):
            self.token_requests.append(_authorization(request) or "none")
            await _respond(writer, conn, [("Content-Type", "application/json")], [b'{"token":"t"}'])
        elif path.startswith("/location?to="):
            location = path.removeprefix("/location?to=")
            headers = [("Location", location), ("Content-Length", "0")]
            writer.write(conn.send(h11.Response(status_code=202, headers=headers)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
        elif path.split("?", 1)[0] in ("/endless", "/endless-error"):
            error = path.startswith("/endless-error")
            await self._endless(conn, writer, 500 if error else 200)
        elif path == "/close":
            await _respond(writer, conn, [("Connection", "close")], [b"bye"])
        elif path.startswith("/redirect?to="):
            location = path.removeprefix("/redirect?to=")
            writer.write(
                conn.send(
                    h11.Response(
                        status_code=307, headers=[("Location", location), ("Content-Length", "0")]
                    )
                )
                or b""
            )
            writer.write(conn.send(h11.EndOfMessage()) or b"")
        elif path in RAW_ANSWERS:
            # Framings h11 would not produce on its own; the connection ends with them.
            writer.write(RAW_ANSWERS[path])
            await writer.drain()
            writer.close()
        elif path == "/authorization":
            seen = [value for name, value in request.headers if name == b"authorization"]
            await _respond(writer, conn, headers, [b"".join(seen) or b"none"])
        elif path == "/early":
            writer.write(conn.send(h11.InformationalResponse(status_code=103, headers=[])) or b"")
            await _respond(writer, conn, headers, [b"after early hints"])
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    {"/slow": SLOW_SECONDS, "/wait": WAIT_SECONDS}.get(path, 0)
                ):
                    await self._closing.wait()
            await _respond(writer, conn, headers, [b"hello"])

    async def _auth_gate(
        self, path: str, authorization: str, conn: h11.Connection, writer: asyncio.StreamWriter
    ) -> None:
        """200 "ok" to the right Authorization, else 401 with the challenge of `path`."""
        if path.startswith("/basic"):
            wanted, challenge = BASIC_USER, 'Basic realm="scripted"'
        else:
            realm = path.removeprefix("/challenge?realm=")
            wanted, challenge = "Bearer t", f'Bearer realm="{realm}",service="scripted"'
        if authorization == wanted:
            await _respond(writer, conn, [], [b"ok"])
            return
        headers = [("WWW-Authenticate", challenge), ("Content-Length", "0")]
        writer.write(conn.send(h11.Response(status_code=401, headers=headers)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")

    async def _endless(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int
    ) -> None:
        """A chunked JSON-looking body written until the client stops reading or leaves."""
        head = h11.Response(status_code=status, headers=[("Content-Type", "application/json")])
        writer.write(conn.send(head) or b"")
        writer.write(conn.send(h11.Data(data=b'{"tags":[')) or b"")
        while not self._closing.is_set():
            writer.write(conn.send(h11.Data(data=ENDLESS_PIECE)) or b"")
            self.endless_sent += len(ENDLESS_PIECE)
            await writer.drain()


# Raw responses, served as they are, after which the server closes the connection.
RAW_ANSWERS = {
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=ext\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "/until-close": b"HTTP/1.1 200 OK\r\n\r\nall of it until the end",
    "/truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
    "/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
    "/bad-status": b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
}


def _authorization(request: h11.Request) -> str:
    return b"".join(v for n, v in request.headers if n == b"authorization").decode("latin-1")


async def _read_body(conn: h11.Connection, reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            raise h11.RemoteProtocolError(f"unexpected {event!r}")


async def _respond(
    writer: asyncio.StreamWriter,
    conn: h11.Connection,
    headers: list[tuple[str, str]],
    pieces: list[bytes],
    *,
    pause: float = 0.0,
) -> None:
    """A response with Content-Length, its body written piece by piece."""
    if not any(name == "Content-Length" for name, _ in headers):
        headers = [*headers, ("Content-Length", str(sum(len(piece) for piece in pieces)))]
    head = h11.Response(status_code=200, headers=headers)
    writer.write(conn.send(head) or b"")
    for piece in pieces:
        writer.write(conn.send(h11.Data(data=piece)) or b"")
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def silent_server() -> tuple[asyncio.Server, int]:
    """A TCP server that accepts and never answers: a TLS handshake against it hangs."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.read()  # until the client gives up
        writer.close()

    port = free_port()
    return await asyncio.start_server(hold, "127.0.0.1", port), port
