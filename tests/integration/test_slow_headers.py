"""A slow-headers flood from one address: connections that dribble their request head a byte at
a time hold a place of that address only a few seconds, so a webhook sender from the same
address (a registry behind the same NAT as the flood) gets through soon after (it waited 37.5 s).
The bridge's HTTP server with its real caps, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from replicator.daemon.http_admission import MAX_CONNECTIONS_PER_CLIENT
from replicator.daemon.http_messages import Request, Response, Route
from replicator.daemon.http_server import HttpServer

pytestmark = pytest.mark.integration

# How often each slow client sends one more byte of its head: often enough that the idle timeout
# (30 s, for keep-alive connections) never cuts it.
DRIBBLE_SECONDS = 0.5
# The legitimate sender retries a refused webhook this often (registries back off longer).
RETRY_SECONDS = 0.25
# A head must arrive within the server's head deadline (3 s); this is that plus a loaded machine.
ANSWERED_WITHIN_SECONDS = 6.0
# How long the test waits at most, to show how far off a failing run is.
GIVE_UP_SECONDS = 20.0


async def accepted(request: Request) -> Response:
    return Response.text(200, "published")


async def _dribble(port: int, opened: asyncio.Event, count: list[int]) -> None:
    """Open a connection and send a request head a byte at a time, for ever."""
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /events/src HTTP/1.1\r\nhost: bridge\r\nx-slow: ")
        await writer.drain()
        count[0] += 1
        if count[0] >= MAX_CONNECTIONS_PER_CLIENT:
            opened.set()
        while True:
            await asyncio.sleep(DRIBBLE_SECONDS)
            writer.write(b"a")
            await writer.drain()


async def _webhook(port: int) -> bool:
    """One webhook POST on a new connection; whether it was answered 200."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /events/src HTTP/1.1\r\nhost: bridge\r\ncontent-length: 2\r\n"
            b"connection: close\r\n\r\n{}"
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer.startswith(b"HTTP/1.1 200")
    return False


class TestSlowHeaders:
    """A client's slow heads hold its address's places only for the head deadline."""

    async def test_webhook_from_the_flooded_address_gets_through(self) -> None:
        """With MAX_CONNECTIONS_PER_CLIENT connections of 127.0.0.1 dribbling their heads, a
        webhook from 127.0.0.1 retried every 0.25 s is answered 200 within 6 s."""
        async with HttpServer([Route("POST", "/events/", accepted)]) as server:
            opened, count = asyncio.Event(), [0]
            flood = [
                asyncio.create_task(_dribble(server.port, opened, count))
                for _ in range(MAX_CONNECTIONS_PER_CLIENT)
            ]
            try:
                async with asyncio.timeout(GIVE_UP_SECONDS):
                    await opened.wait()
                started = time.monotonic()
                while not await _webhook(server.port):
                    if time.monotonic() - started > GIVE_UP_SECONDS:
                        break
                    await asyncio.sleep(RETRY_SECONDS)
                took = time.monotonic() - started
            finally:
                for task in flood:
                    task.cancel()
                await asyncio.gather(*flood, return_exceptions=True)
        print(f"webhook answered {took:.2f} s into the slow-headers flood")
        assert took < ANSWERED_WITHIN_SECONDS, f"{took:.1f} s"
