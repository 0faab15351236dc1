"""The h11 HTTP server: routing, keep-alive, body cap, slow clients, graceful close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from replicator.daemon.http_messages import Request, Response, Route
from replicator.daemon.http_server import HttpServer
from replicator.errors import ConfigError

MAX_BODY = 1024
# Timeouts shrunk so the slow-client tests take a fraction of a second.
REQUEST_TIMEOUT = 0.3
IDLE_TIMEOUT = 0.5
# A test waits at most this long for anything the server should do promptly.
PATIENCE = 5.0


async def echo(request: Request) -> Response:
    return Response.json(
        200,
        {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "body": request.body.decode(),
            "type": request.header("Content-Type"),
        },
    )


async def boom(request: Request) -> Response:
    raise RuntimeError("handler bug")


release = asyncio.Event()


async def slow(request: Request) -> Response:
    await release.wait()
    return Response.text(200, "finished")


ROUTES = [
    Route("GET", "/healthz", echo),
    Route("POST", "/events/", echo),
    Route("GET", "/events/special", echo),
    Route("GET", "/boom", boom),
    Route("GET", "/slow", slow),
]


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    async with HttpServer(
        ROUTES, max_body=MAX_BODY, request_timeout=REQUEST_TIMEOUT, idle_timeout=IDLE_TIMEOUT
    ) as running:
        yield running


@pytest.fixture
async def client(server: HttpServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        yield http


async def raw_exchange(port: int, data: bytes, *, wait_close: bool = True) -> bytes:
    """Send raw bytes, then read until the server closes (or PATIENCE runs out)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(PATIENCE):
            if wait_close:
                return await reader.read()
            return await reader.read(65536)
    finally:
        writer.close()


class TestRouting:
    async def test_exact_route(self, client: httpx.AsyncClient) -> None:
        """A GET on an exact path reaches its handler with the query parsed."""
        response = await client.get("/healthz", params={"a": "1", "empty": ""})
        assert response.status_code == 200
        assert response.json()["query"] == {"a": "1", "empty": ""}

    async def test_prefix_route_gets_sub_paths(self, client: httpx.AsyncClient) -> None:
        """A route ending in '/' serves every path under it, body and headers included."""
        response = await client.post(
            "/events/use1", content=b'{"events":[]}', headers={"content-type": "application/json"}
        )
        assert response.json() == {
            "method": "POST",
            "path": "/events/use1",
            "query": {},
            "body": '{"events":[]}',
            "type": "application/json",
        }

    async def test_longest_prefix_wins(self, client: httpx.AsyncClient) -> None:
        """An exact route inside a prefix takes precedence for its method."""
        response = await client.get("/events/special")
        assert response.status_code == 200

    async def test_unknown_path_is_404(self, client: httpx.AsyncClient) -> None:
        """A path no route covers is answered 404."""
        assert (await client.get("/nothing")).status_code == 404

    async def test_wrong_method_is_405_with_allow(self, client: httpx.AsyncClient) -> None:
        """A known path with the wrong method is 405 and says which methods are allowed."""
        response = await client.delete("/events/use1")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"

    async def test_handler_error_is_500_and_server_survives(
        self, client: httpx.AsyncClient
    ) -> None:
        """A handler that raises gives a 500 and the next request is served normally."""
        assert (await client.get("/boom")).status_code == 500
        assert (await client.get("/healthz")).status_code == 200


class TestProtocol:
    async def test_keep_alive_serves_two_requests_on_one_connection(
        self, server: HttpServer
    ) -> None:
        """Two pipelined requests on one connection get two responses, then the close."""
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        closing = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        data = await raw_exchange(server.port, request + closing)
        assert data.count(b"HTTP/1.1 200 ") == 2

    async def test_declared_body_over_cap_is_413(self, client: httpx.AsyncClient) -> None:
        """A Content-Length above the cap is refused with 413 without reading the body."""
        response = await client.post("/events/use1", content=b"x" * (MAX_BODY + 1))
        assert response.status_code == 413

    async def test_chunked_body_over_cap_is_413(self, server: HttpServer) -> None:
        """A chunked body that grows past the cap is refused with 413."""
        chunk = b"x" * 600
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
        head = b"POST /events/use1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        data = await raw_exchange(server.port, head + body)
        assert data.startswith(b"HTTP/1.1 413 ")

    async def test_body_at_cap_is_accepted(self, client: httpx.AsyncClient) -> None:
        """A body of exactly the cap is accepted."""
        response = await client.post("/events/use1", content=b"x" * MAX_BODY)
        assert response.status_code == 200

    async def test_slow_body_is_cut_with_408(self, server: HttpServer) -> None:
        """A client that announces a body and stalls gets 408 after the request timeout."""
        head = b"POST /events/use1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial"
        data = await raw_exchange(server.port, head)
        assert data.startswith(b"HTTP/1.1 408 ")

    async def test_idle_connection_is_closed(self, server: HttpServer) -> None:
        """A connection that sends nothing is closed after the idle timeout."""
        assert await raw_exchange(server.port, b"") == b""

    async def test_garbage_is_400(self, server: HttpServer) -> None:
        """A request line that is not HTTP is answered 400 and the connection closed."""
        data = await raw_exchange(server.port, b"HELLO\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 400 ")

    async def test_expect_100_continue(self, server: HttpServer) -> None:
        """A client waiting for 100 Continue gets it, then its response."""
        head = (
            b"POST /events/use1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(head)
            async with asyncio.timeout(PATIENCE):
                interim = await reader.readuntil(b"\r\n\r\n")
                writer.write(b"{}")
                final = await reader.read()
        finally:
            writer.close()
        assert interim.startswith(b"HTTP/1.1 100 ")
        assert final.startswith(b"HTTP/1.1 200 ")


class TestListen:
    async def test_port_in_use_is_a_config_error(self, server: HttpServer) -> None:
        """Listening on a port already taken raises ConfigError naming the address."""
        with pytest.raises(ConfigError, match=f"127.0.0.1:{server.port}"):
            async with HttpServer(ROUTES, port=server.port):
                pass


class TestClose:
    async def test_busy_request_finishes_during_close(self) -> None:
        """Closing lets an in-flight request complete, then refuses new connections."""
        release.clear()
        server = HttpServer(ROUTES)
        async with server, httpx.AsyncClient() as http:
            url = f"http://127.0.0.1:{server.port}"
            in_flight = asyncio.create_task(http.get(f"{url}/slow"))
            await asyncio.sleep(0.1)
            closing = asyncio.create_task(server.close(grace=PATIENCE))
            await asyncio.sleep(0.1)
            release.set()
            response = await in_flight
            await closing
            assert response.status_code == 200
            assert response.headers["connection"] == "close"
            with pytest.raises(httpx.ConnectError):
                await http.get(f"{url}/healthz")

    async def test_idle_connections_close_at_once(self) -> None:
        """An idle keep-alive connection does not delay close."""
        server = HttpServer(ROUTES, idle_timeout=60.0)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"null}")
            async with asyncio.timeout(PATIENCE):
                await server.close()
                assert await reader.read() == b""
            writer.close()
