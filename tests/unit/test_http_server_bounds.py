"""What a hostile client can take of the HTTP server: connections (in total and per client),
time (a client that never reads its response), and memory (a body sent without a token)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from replicator.daemon.http_admission import Admission
from replicator.daemon.http_messages import Request, Response, Route
from replicator.daemon.http_server import HttpServer

# A test waits at most this long for anything the server should do promptly.
PATIENCE = 5.0
# Shrunk so the never-reading client is cut in a fraction of a second.
WRITE_TIMEOUT = 0.3
# Far more than loopback socket buffers hold, so a client that never reads blocks the server.
BIG_BODY = b"x" * (16 * 1024 * 1024)
MIB = 1024 * 1024
called: list[str] = []


async def hello(request: Request) -> Response:
    called.append(request.path)
    return Response.text(200, "hello")


async def big(request: Request) -> Response:
    return Response(200, BIG_BODY)


def token_required(head: Request) -> Response | None:
    """Refuses, from the head, any request without the right bearer token."""
    if head.header("authorization") == "Bearer right":
        return None
    return Response.text(401, "a valid bearer token is required")


ROUTES = [
    Route("GET", "/hello", hello),
    Route("GET", "/big", big),
    Route("POST", "/events/", hello, admit=token_required),
]


@contextlib.asynccontextmanager
async def serving(**options: object) -> AsyncIterator[HttpServer]:
    """A server on a free port with ROUTES and `options`."""
    async with HttpServer(ROUTES, **options) as server:  # type: ignore[arg-type]
        yield server


async def get_hello(port: int) -> bytes:
    """The raw answer to GET /hello on a new connection, read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    async with asyncio.timeout(PATIENCE):
        answer = await reader.read()
    writer.close()
    return answer


async def wait_until(predicate: object, what: str) -> None:
    """Poll `predicate()` until true, failing after PATIENCE."""
    async with asyncio.timeout(PATIENCE):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)


class TestConnectionCaps:
    async def test_connections_over_the_total_cap_are_refused(self) -> None:
        """With the cap's worth of connections open, one more is answered 503 and closed; a
        place freed is taken again."""
        async with serving(admission=Admission(max_connections=4, max_per_client=100)) as server:
            held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
            await wait_until(lambda: server.admission.open == 4, "4 open")
            answer = await get_hello(server.port)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert server.admission.refused == 1
            held.pop()[1].close()
            await wait_until(lambda: server.admission.open == 3, "one freed")
            assert b"hello" in await get_hello(server.port)
            for _, writer in held:
                writer.close()

    async def test_one_client_cannot_take_every_connection(self) -> None:
        """A client over its own cap is refused; another address is still served."""
        async with serving(admission=Admission(max_connections=100, max_per_client=3)) as server:
            held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
            await wait_until(lambda: server.admission.open == 3, "3 open")
            assert (await get_hello(server.port)).startswith(b"HTTP/1.1 503")
            # 127.0.0.2 is another client (loopback on Linux answers the whole 127/8).
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, local_addr=("127.0.0.2", 0)
            )
            writer.write(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            async with asyncio.timeout(PATIENCE):
                assert b"hello" in await reader.read()
            writer.close()
            for _, held_writer in held:
                held_writer.close()


class TestSlowReaders:
    async def test_client_that_never_reads_is_cut(self) -> None:
        """A client that asks for a large answer and never reads it loses its connection after
        the write timeout, instead of holding it (and the answer) for ever."""
        async with serving(write_timeout=WRITE_TIMEOUT) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            await wait_until(lambda: server.admission.open == 1, "connected")
            await wait_until(lambda: server.admission.open == 0, "cut")
            sock.close()


class TestTokenBeforeBody:
    async def test_request_without_token_is_refused_before_its_body(self) -> None:
        """A POST announcing 1 MiB without the token is answered 401 from its head: no byte of
        the body is sent, none read, the handler never runs."""
        called.clear()
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /events/src HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % MIB
            )
            async with asyncio.timeout(PATIENCE):
                answer = await reader.read()
            writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert called == []

    async def test_refused_client_sending_its_body_reads_the_answer(self) -> None:
        """A client that sends its whole body anyway still reads the 401, not a reset."""
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /events/src HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % MIB
                + b"{" * MIB
            )
            async with asyncio.timeout(PATIENCE):
                answer = await reader.read()
            writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer

    async def test_request_with_token_is_read_and_handled(self) -> None:
        """With the token, the body is read and the handler answers."""
        called.clear()
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /events/src HTTP/1.1\r\nhost: x\r\nauthorization: Bearer right\r\n"
                b"connection: close\r\ncontent-length: 2\r\n\r\n{}"
            )
            async with asyncio.timeout(PATIENCE):
                answer = await reader.read()
            writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert called == ["/events/src"]


@pytest.mark.parametrize("count", [3])
def test_admission_counts_back_to_zero(count: int) -> None:
    """Every admitted connection released leaves no client counted."""
    admission = Admission(max_connections=count, max_per_client=count)
    assert all(admission.admit("a") for _ in range(count))
    assert not admission.admit("b")
    for _ in range(count):
        admission.release("a")
    assert admission.open == 0
    assert admission.admit("b")


class TestReservedPlaces:
    """Places beyond the cap kept for authenticated senders (http_admission)."""

    @pytest.mark.parametrize(
        ("clients", "places"),
        [
            ("aab", ["shared", "shared", "reserved"]),
            ("aaa", ["shared", "shared", "reserved"]),
            ("aaaa", ["shared", "shared", "reserved", None]),
            ("aabcd", ["shared", "shared", "reserved", "reserved", None]),
        ],
        ids=["other-address", "same-address-once", "one-unproven-per-address", "reserve-full"],
    )
    def test_admit(self, clients: str, places: list[str | None]) -> None:
        """With 2 shared and 2 reserved places, connections past the shared ones take a reserved
        place, at most one unproven per address, until the reserve is full."""
        admission = Admission(max_connections=2, max_per_client=10, reserved=2)
        got = [admission.admit(client) for client in clients]
        assert [place.value if place else None for place in got] == places

    def test_proven_place_frees_the_address_unproven_allowance(self) -> None:
        """Once a reserved connection's head showed it authenticated, its address may take
        another reserved place; releasing all gives every count back."""
        admission = Admission(max_connections=1, max_per_client=10, reserved=3)
        shared, first = admission.admit("a"), admission.admit("a")
        assert shared is not None
        assert first is not None
        assert admission.admit("a") is None
        admission.proven("a")
        second = admission.admit("a")
        assert second is not None
        assert second.value == "reserved"
        admission.release("a", first, proven=True)
        admission.release("a", second)
        admission.release("a", shared)
        assert admission.open == 0
        assert [admission.admit(c) is not None for c in "abc"] == [True, True, True]
