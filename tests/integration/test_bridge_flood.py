"""`replicator bridge` under a flood: many connections at once posting a megabyte each without
the token, and a crowd of idle connections. Its peak RSS (VmHWM) is read from /proc: a body
refused from its head is never read, and connections past the caps are turned away, so memory
stays flat and a legitimate sender from another address is still answered."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.daemon.http_admission import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_CLIENT,
    RESERVED_FOR_TRUSTED,
)
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.ports import free_port, wait_listening

pytestmark = pytest.mark.integration

TOKEN = "s3cret-bridge-token"
SOURCE = "src1"
# A source whose webhooks are signed (GitHub's X-Hub-Signature-256), and its secret.
SIGNED_SOURCE, SIGNING_SECRET = "gh", "s3cret-signing-key"
MIB = 1024 * 1024
# Senders posting at once, each announcing and sending MIB without the token.
FLOOD_SENDERS = 200
# Idle connections opened and held (many times the per-client cap).
IDLE_CONNECTIONS = 1000
# The bridge's peak RSS may grow this much under the flood: its request buffers and tasks.
# Reading each body before the token check would take FLOOD_SENDERS MiB.
MAX_GROWTH_KIB = 48 * 1024
SEND_PIECE = 64 * 1024
START_SECONDS = 30.0
PATIENCE = 60.0


def peak_rss_kib(pid: int) -> int:
    """VmHWM of `pid` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture
def bridge(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A `replicator bridge` process with a token; (its pid, its port)."""
    (tmp_path / "bridge.token").write_text(TOKEN + "\n")
    (tmp_path / "gh.secret").write_text(SIGNING_SECRET + "\n")
    port = free_port()
    config = tmp_path / "replicator.toml"
    config.write_text(
        f"""version = 1
[journal]
url = "sqlite:///{tmp_path}/journal.db"
[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
client_id = "bridge-flood-{port}"
[bridge]
listen = "127.0.0.1:{port}"
token_file = "bridge.token"
[bridge.sources.{SIGNED_SOURCE}]
format = "github"
auth = "hmac-sha256"
secret_file = "gh.secret"
[registries.{SOURCE}]
account = "111122223333"
region = "us-east-1"
url = "http://127.0.0.1:1"
[registries.{SIGNED_SOURCE}]
account = "111122223333"
region = "us-west-2"
url = "https://ghcr.io"
"""
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "replicator", "bridge", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )
    try:
        wait_listening(port, timeout=START_SECONDS)
        yield process.pid, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=START_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def post_without_token(port: int) -> bytes:
    """POST a MiB without the token, in pieces; the first line of the answer (b"" if none)."""
    with contextlib.suppress(ConnectionError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /events/{SOURCE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {MIB}\r\n\r\n".encode()
        )
        piece = b"{" * SEND_PIECE
        with contextlib.suppress(ConnectionError):
            for _ in range(MIB // SEND_PIECE):
                writer.write(piece)
                await writer.drain()
        answer = await reader.readline()
        writer.close()
        return answer
    return b""


async def legitimate_answer(port: int) -> bytes:
    """The status line a sender from another address (127.0.0.2) gets for a GET /healthz."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    answer = await reader.readline()
    writer.close()
    return answer


class TestFlood:
    async def test_unauthenticated_megabytes_are_not_read(self, bridge: tuple[int, int]) -> None:
        """FLOOD_SENDERS posting a MiB each without the token at once: every one answered
        401 or 503, the bridge's peak RSS grows less than MAX_GROWTH_KIB."""
        pid, port = bridge
        before = peak_rss_kib(pid)
        async with asyncio.timeout(PATIENCE):
            answers = await asyncio.gather(
                *(post_without_token(port) for _ in range(FLOOD_SENDERS))
            )
        growth = peak_rss_kib(pid) - before
        print(f"FLOOD_PEAK_RSS_GROWTH_KIB {growth} (before {before})")
        statuses = {answer.split(b" ")[1] if answer else b"none" for answer in answers}
        assert statuses <= {b"401", b"503", b"none"}, statuses
        assert growth < MAX_GROWTH_KIB

    async def test_idle_crowd_is_capped_and_others_are_served(
        self, bridge: tuple[int, int]
    ) -> None:
        """IDLE_CONNECTIONS held from one address: past its cap they are turned away, RSS
        stays flat, and another address is still answered."""
        pid, port = bridge
        before = peak_rss_kib(pid)
        held = []
        try:
            async with asyncio.timeout(PATIENCE):
                for _ in range(IDLE_CONNECTIONS):
                    with contextlib.suppress(ConnectionError):
                        held.append(await asyncio.open_connection("127.0.0.1", port))
                refused = 0
                for reader, _ in held:
                    with contextlib.suppress(TimeoutError, ConnectionError):
                        async with asyncio.timeout(0.05):
                            if (await reader.readline()).startswith(b"HTTP/1.1 503"):
                                refused += 1
                answer = await legitimate_answer(port)
        finally:
            for _, writer in held:
                writer.close()
        growth = peak_rss_kib(pid) - before
        print(f"IDLE_PEAK_RSS_GROWTH_KIB {growth} refused {refused} of {len(held)}")
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert refused >= len(held) - MAX_CONNECTIONS_PER_CLIENT
        assert growth < MAX_GROWTH_KIB


# Addresses of an idle flood that together fill every shared place (MAX_CONNECTIONS).
FLOOD_ADDRESSES = [
    f"127.0.0.{n}" for n in range(10, 10 + MAX_CONNECTIONS // MAX_CONNECTIONS_PER_CLIENT)
]


async def _status_from(port: int, address: str, *, token: str | None) -> bytes:
    """The status line answered to a webhook POST from `address` (with the bridge token or
    without), b"" when the connection was closed unanswered."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        auth = f"authorization: Bearer {token}\r\n" if token else ""
        writer.write(
            f"POST /events/{SOURCE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"{auth}content-length: 2\r\nconnection: close\r\n\r\n{{}}".encode()
        )
        await writer.drain()
        answer = await reader.readline()
        writer.close()
        return answer
    return b""


class TestReservedShare:
    async def test_authenticated_sender_keeps_a_place_under_a_flood(
        self, bridge: tuple[int, int]
    ) -> None:
        """With every shared place held by idle connections from 8 addresses, a webhook that
        carries the bridge token is still answered (a reserved place: its head is checked
        before its body), while one without it is turned away 503."""
        _, port = bridge
        held = []
        try:
            async with asyncio.timeout(PATIENCE):
                for address in FLOOD_ADDRESSES:
                    for _ in range(MAX_CONNECTIONS_PER_CLIENT):
                        with contextlib.suppress(ConnectionError):
                            held.append(
                                await asyncio.open_connection(
                                    "127.0.0.1", port, local_addr=(address, 0)
                                )
                            )
                unauthenticated = await _status_from(port, "127.0.0.3", token=None)
                authenticated = await _status_from(port, "127.0.0.2", token=TOKEN)
        finally:
            for _, writer in held:
                writer.close()
        print(
            f"flood of {len(held)}: with the token {authenticated!r}, without {unauthenticated!r}"
        )
        assert len(held) == MAX_CONNECTIONS, len(held)
        assert authenticated, "the authenticated webhook was closed unanswered"
        # Answered from its body ({} is no event: 400): it had a place, not the 503 refusal.
        assert not authenticated.startswith(b"HTTP/1.1 503"), authenticated
        assert unauthenticated.startswith(b"HTTP/1.1 503"), unauthenticated


# Addresses sending webhooks whose signature is wrong, with bodies that never finish arriving;
# as many as the flood's, each trying more connections than the reserve has places.
SIGNING_ADDRESSES = [f"127.0.0.{n}" for n in range(30, 30 + len(FLOOD_ADDRESSES))]
WRONG_SIGNED_PER_ADDRESS = RESERVED_FOR_TRUSTED // len(SIGNING_ADDRESSES) + 2
# How long a connection is given to be answered 503 (refused) before it counts as held: the
# bridge answers a refusal at once, so under load too this is ample.
REFUSAL_SECONDS = 0.5
# The body the wrong-signed webhooks announce, of which they send one byte.
ANNOUNCED_BODY_BYTES = 4096


async def _open_from(port: int, address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


async def _wrong_signed_slow_posts(port: int, address: str) -> list[asyncio.StreamWriter]:
    """From `address`, one after another, webhooks to the signed source whose signature header
    is present but wrong, each sending its head and one byte of its body; the connections the
    bridge kept (not answered 503 within REFUSAL_SECONDS)."""
    kept = []
    for _ in range(WRONG_SIGNED_PER_ADDRESS):
        with contextlib.suppress(ConnectionError):
            reader, writer = await _open_from(port, address)
            writer.write(
                f"POST /events/{SIGNED_SOURCE} HTTP/1.1\r\nhost: x\r\n"
                f"content-type: application/json\r\nx-github-event: package\r\n"
                f"x-hub-signature-256: sha256={'0' * 64}\r\n"
                f"content-length: {ANNOUNCED_BODY_BYTES}\r\n\r\n{{".encode()
            )
            await writer.drain()
            try:
                async with asyncio.timeout(REFUSAL_SECONDS):
                    await reader.readline()
                writer.close()  # answered (refused): not held
            except TimeoutError:
                kept.append(writer)
    return kept


class TestReserveAgainstWrongSignatures:
    async def test_wrong_signatures_with_slow_bodies_leave_the_reserve_to_real_senders(
        self, bridge: tuple[int, int]
    ) -> None:
        """With every shared place held by idle connections, webhooks from 8 other addresses
        whose HMAC signature header is there but wrong, each dribbling its body, do not take the
        reserve: a webhook with the bridge token from another address is still answered."""
        _, port = bridge
        held: list[asyncio.StreamWriter] = []
        try:
            async with asyncio.timeout(PATIENCE):
                for address in FLOOD_ADDRESSES:
                    for _ in range(MAX_CONNECTIONS_PER_CLIENT):
                        with contextlib.suppress(ConnectionError):
                            held.append((await _open_from(port, address))[1])
                idle = len(held)
                slow = await asyncio.gather(
                    *(_wrong_signed_slow_posts(port, a) for a in SIGNING_ADDRESSES)
                )
                held.extend(writer for kept in slow for writer in kept)
                authenticated = await _status_from(port, "127.0.0.2", token=TOKEN)
        finally:
            for writer in held:
                writer.close()
        in_reserve = len(held) - idle
        print(f"idle {idle}, wrong-signed slow bodies held {in_reserve}: token {authenticated!r}")
        assert idle == MAX_CONNECTIONS, idle
        assert in_reserve >= len(SIGNING_ADDRESSES), "each signing address got a reserved place"
        assert authenticated, "the authenticated webhook was closed unanswered"
        assert not authenticated.startswith(b"HTTP/1.1 503"), authenticated
