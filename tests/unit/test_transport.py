"""RegistryTransport: keep-alive, per-origin bound, streamed bodies, dead connections, TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from replicator.registry.connections import new_transport
from replicator.registry.http.transport import RegistryTransport
from tests.support.ports import free_port
from tests.support.scripted_http import PIECE, PIECES, ScriptedServer, silent_server
from tests.support.tls import Pki, make_pki

# Every test finishes in well under this; a hang fails instead of stalling the suite.
PATIENCE = 10.0
# Timeouts the error tests expect to trip (the server stalls for seconds).
SHORT = 0.2


def client(
    *,
    max_connections: int = 8,
    context: ssl.SSLContext | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.AsyncClient:
    tls = context or ssl.create_default_context()
    transport = RegistryTransport(tls=lambda: tls, max_connections=max_connections)
    return httpx.AsyncClient(transport=transport, timeout=timeout or httpx.Timeout(PATIENCE))


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[start : start + size]


class TestKeepAlive:
    """Connections are reused while the server allows, and never after a broken exchange."""

    async def test_one_connection_for_sequential_requests(self) -> None:
        """100 sequential requests travel on one TCP connection."""
        async with ScriptedServer() as server, client() as http:
            for _ in range(100):
                response = await http.get(f"{server.url}/hello")
                assert response.content == b"hello"
        assert server.accepts == 1

    async def test_max_connections_per_origin(self) -> None:
        """50 concurrent requests with max_connections=4 never open more than 4 connections."""
        async with ScriptedServer() as server, client(max_connections=4) as http:
            responses = await asyncio.gather(*(http.get(f"{server.url}/wait") for _ in range(50)))
        assert [r.status_code for r in responses] == [200] * 50
        assert server.max_open == 4
        assert server.accepts == 4

    async def test_closed_mid_body_is_not_reused(self) -> None:
        """A response closed before its end closes its connection; the next one is new."""
        async with ScriptedServer() as server, client() as http:
            async with http.stream("GET", f"{server.url}/pieces") as response:
                async for _ in response.aiter_raw():
                    break
            assert (await http.get(f"{server.url}/hello")).content == b"hello"
        assert server.accepts == 2

    async def test_server_closing_idle_connections(self) -> None:
        """After the server closed an idle connection, the next request opens a fresh one (even
        one whose streamed body could not be retried)."""
        async with ScriptedServer(idle_close_seconds=0.05) as server, client() as http:
            assert (await http.get(f"{server.url}/hello")).status_code == 200
            await asyncio.sleep(0.3)
            response = await http.put(f"{server.url}/echo", content=chunks(b"fresh", 2))
            assert response.content == b"fresh"
        assert server.accepts == 2

    async def test_replayable_request_retried_once_on_stale_connection(self) -> None:
        """A reused connection the server drops without answering is retried on a new one."""
        async with ScriptedServer(answer_once=True) as server, client() as http:
            for _ in range(3):
                response = await http.put(f"{server.url}/echo", content=b"again")
                assert response.content == b"again"
        assert server.accepts == 3

    async def test_streamed_request_not_retried_on_stale_connection(self) -> None:
        """A body from an async iterator cannot be replayed: the stale connection's error shows."""
        async with ScriptedServer(answer_once=True) as server, client() as http:
            await http.get(f"{server.url}/hello")
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await http.put(f"{server.url}/echo", content=chunks(b"once", 2))

    @pytest.mark.parametrize(
        ("path", "headers"),
        [("/close", {}), ("/hello", {"Connection": "close"})],
        ids=["server-says-close", "client-says-close"],
    )
    async def test_connection_close(self, path: str, headers: dict[str, str]) -> None:
        """`Connection: close` from either side ends the connection after the response."""
        async with ScriptedServer() as server, client() as http:
            first = await http.get(f"{server.url}{path}", headers=headers)
            assert first.status_code == 200
            assert (await http.get(f"{server.url}/hello")).content == b"hello"
        assert server.accepts == 2

    async def test_aclose_closes_idle_connections(self) -> None:
        """Closing the client closes its pooled connections (the server sees them go)."""
        async with ScriptedServer() as server:
            async with client() as http:
                await asyncio.gather(*(http.get(f"{server.url}/wait") for _ in range(3)))
                assert server.open == 3
            async with asyncio.timeout(PATIENCE):
                while server.open:
                    await asyncio.sleep(0.01)


class TestBodies:
    """Request and response bodies stream through intact."""

    @pytest.mark.parametrize(
        ("headers", "framing"),
        [({}, "chunked"), ({"Content-Length": str(3 * 1024 * 1024)}, "length")],
        ids=["chunked", "content-length"],
    )
    async def test_async_iterator_body(self, headers: dict[str, str], framing: str) -> None:
        """A 3 MiB body from an async iterator arrives whole, framed as the headers say."""
        data = bytes(range(256)) * (3 * 1024 * 4)
        async with ScriptedServer() as server, client() as http:
            response = await http.post(
                f"{server.url}/echo", content=chunks(data, 100_000), headers=headers
            )
        assert response.headers["x-framing"] == framing
        assert response.content == data

    async def test_bytes_body(self) -> None:
        """A bytes body goes with its Content-Length."""
        async with ScriptedServer() as server, client() as http:
            response = await http.put(f"{server.url}/echo", content=b"manifest")
        assert (response.headers["x-framing"], response.content) == ("length", b"manifest")

    async def test_response_streamed_in_pieces(self) -> None:
        """A body sent in timed pieces reaches the reader as it comes, in more than one chunk."""
        async with (
            ScriptedServer() as server,
            client() as http,
            http.stream("GET", f"{server.url}/pieces") as response,
        ):
            received = [chunk async for chunk in response.aiter_raw()]
        assert len(received) > 1
        assert b"".join(received) == PIECE * PIECES

    async def test_head_has_no_body_and_keeps_the_connection(self) -> None:
        """HEAD gets the headers only, and the connection serves the next request."""
        async with ScriptedServer() as server, client() as http:
            head = await http.head(f"{server.url}/hello")
            assert (head.headers["content-length"], head.content) == ("5", b"")
            assert (await http.get(f"{server.url}/hello")).content == b"hello"
        assert server.accepts == 1

    async def test_informational_response_skipped(self) -> None:
        """A 103 Early Hints before the answer is skipped; the final response is returned."""
        async with ScriptedServer() as server, client() as http:
            response = await http.get(f"{server.url}/early")
        assert (response.status_code, response.content) == (200, b"after early hints")


class TestErrors:
    """Failures surface as httpx's exceptions, with the request attached."""

    async def test_reset_mid_response(self) -> None:
        """A connection reset in the middle of a body raises ReadError or RemoteProtocolError."""
        async with ScriptedServer() as server, client() as http:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as caught:
                await http.get(f"{server.url}/reset")
            assert caught.value.request.url.path == "/reset"
            assert (await http.get(f"{server.url}/hello")).content == b"hello"

    async def test_read_timeout(self) -> None:
        """A server slower than the read timeout raises ReadTimeout."""
        async with ScriptedServer() as server, client(timeout=httpx.Timeout(SHORT)) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"{server.url}/slow")

    async def test_write_timeout(self) -> None:
        """A server that stops reading a large upload raises WriteTimeout."""
        data = b"w" * (64 * 1024 * 1024)
        timeout = httpx.Timeout(PATIENCE, write=SHORT)
        async with ScriptedServer() as server, client(timeout=timeout) as http:
            with pytest.raises(httpx.WriteTimeout):
                await http.put(f"{server.url}/stall", content=chunks(data, 1024 * 1024))

    async def test_connect_timeout(self) -> None:
        """A TLS handshake the server never answers raises ConnectTimeout."""
        server, port = await silent_server()
        async with server, client(timeout=httpx.Timeout(PATIENCE, connect=SHORT)) as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get(f"https://127.0.0.1:{port}/")

    async def test_connection_refused(self) -> None:
        """Nothing listening raises ConnectError."""
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{free_port()}/")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throw-away CA and server certificate for 127.0.0.1."""
    return make_pki(tmp_path_factory.mktemp("transport-pki"))


def server_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    return context


class TestTls:
    """HTTPS with the SSL context given to the transport."""

    async def test_trusted_ca(self, pki: Pki) -> None:
        """With the test CA trusted, requests succeed and share one connection."""
        trusting = ssl.create_default_context(cafile=str(pki.ca_file))
        async with ScriptedServer(tls=server_context(pki)) as server:
            async with client(context=trusting) as http:
                for _ in range(3):
                    assert (await http.get(f"{server.url}/hello")).content == b"hello"
            assert server.accepts == 1

    async def test_untrusted_certificate(self, pki: Pki) -> None:
        """Without the CA, ConnectError is raised, caused by SSLCertVerificationError."""
        async with ScriptedServer(tls=server_context(pki)) as server, client() as http:
            with pytest.raises(httpx.ConnectError) as caught:
                await http.get(f"{server.url}/hello")
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)

    async def test_redirect_to_another_origin(self, pki: Pki) -> None:
        """A redirect from a plain HTTP origin to an HTTPS one is followed (blob storage)."""
        trusting = ssl.create_default_context(cafile=str(pki.ca_file))
        async with (
            ScriptedServer() as registry,
            ScriptedServer(tls=server_context(pki)) as storage,
            client(context=trusting) as http,
        ):
            response = await http.get(
                f"{registry.url}/redirect?to={storage.url}/hello", follow_redirects=True
            )
        assert (response.status_code, response.content) == (200, b"hello")
        assert (len(response.history), registry.accepts, storage.accepts) == (1, 1, 1)

    async def test_plain_http_never_builds_a_tls_context(self) -> None:
        """A transport that only reaches http:// origins never asks for its SSL context."""
        asked: list[bool] = []

        def tls() -> ssl.SSLContext:
            asked.append(True)
            return ssl.create_default_context()

        transport = RegistryTransport(tls=tls, max_connections=2)
        async with ScriptedServer() as server, httpx.AsyncClient(transport=transport) as http:
            assert (await http.get(f"{server.url}/hello")).content == b"hello"
        assert asked == []

    async def test_https_asks_for_the_tls_context(self, pki: Pki) -> None:
        """The first HTTPS connection takes the context the factory returns (its CA is used)."""
        asked: list[bool] = []

        def tls() -> ssl.SSLContext:
            asked.append(True)
            return ssl.create_default_context(cafile=str(pki.ca_file))

        transport = RegistryTransport(tls=tls, max_connections=2)
        async with (
            ScriptedServer(tls=server_context(pki)) as server,
            httpx.AsyncClient(transport=transport) as http,
        ):
            assert (await http.get(f"{server.url}/hello")).content == b"hello"
        assert asked == [True]

    def test_named_ca_bundle_is_read_at_once(self, tmp_path: Path) -> None:
        """A CA bundle that does not exist fails when the transport is made, not at a connection."""
        missing = tmp_path / "no-such-ca.pem"
        with pytest.raises(OSError, match="No such file"):
            new_transport(verify=str(missing))


class TestFraming:
    """Response framings other than Content-Length, and framing errors, from raw answers."""

    async def test_chunked_response(self) -> None:
        """A chunked body with an extension and a trailer is decoded to its data."""
        async with ScriptedServer() as server, client() as http:
            response = await http.get(f"{server.url}/chunked")
        assert response.content == b"hello world"

    async def test_body_until_close(self) -> None:
        """Without Content-Length or chunking, the body runs until the server closes."""
        async with ScriptedServer() as server, client() as http:
            response = await http.get(f"{server.url}/until-close")
        assert response.content == b"all of it until the end"

    @pytest.mark.parametrize(
        "path", ["/truncated", "/bad-chunk", "/bad-status", "/two-lengths"],
        ids=["body-shorter-than-length", "bad-chunk-size", "not-http-1", "conflicting-lengths"],
    )  # fmt: skip
    async def test_broken_framing_is_a_protocol_error(self, path: str) -> None:
        """A response that breaks HTTP/1.1 framing raises RemoteProtocolError."""
        async with ScriptedServer() as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(f"{server.url}{path}")

    async def test_request_body_shorter_than_its_length(self) -> None:
        """A streamed body that ends before its Content-Length is refused before the server
        would wait for the rest; the connection is not reused."""
        async with ScriptedServer() as server, client() as http:
            with pytest.raises(httpx.LocalProtocolError):
                await http.post(
                    f"{server.url}/echo",
                    content=chunks(b"short", 2),
                    headers={"Content-Length": "9"},
                )
            assert (await http.get(f"{server.url}/hello")).content == b"hello"
        assert server.accepts == 2

    async def test_header_injection_refused(self) -> None:
        """A header value carrying CR LF (a hostile token) is refused, never sent."""
        async with ScriptedServer() as server, client() as http:
            with pytest.raises(httpx.LocalProtocolError):
                await http.get(f"{server.url}/hello", headers={"X-Token": "a\r\nX-Evil: 1"})
