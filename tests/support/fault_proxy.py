"""A fault-injecting HTTP/1.1 reverse proxy in front of a real registry (loopback only).

A real registry cannot be made to answer 429, serve corrupt bytes or drop a connection on cue;
this proxy can. It streams bodies chunk by chunk (a blob is never held whole), keeps connections
alive both ways, and rewrites `Location` headers that point at the registry to point at itself.

Faults are tried in the order added; the first whose predicate matches the request and whose
budget (`times`, and the seeded `share`) allows fires. It runs in a background thread with its
own event loop so that synchronous tests can use it:

    proxy = FaultProxy(registry.url); proxy.start()
    proxy.add(Fault.status_code(429, blob_get(), times=1, retry_after_seconds=1))
    ...; proxy.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
import time
from dataclasses import dataclass, field

import h11

from tests.support.faults import (
    Fault,
    FaultKind,
    Predicate,
    ProxiedRequest,
    RequestRecord,
    blob_get,
    manifest_get,
    manifest_requests,
    requests,
    unheld_mounts,
    uploads,
)
from tests.support.loopback_server import CHUNK_SIZE, LoopbackServer, loopback_address, reset

__all__ = [
    "Fault",
    "FaultKind",
    "FaultProxy",
    "Predicate",
    "ProxiedRequest",
    "RequestRecord",
    "blob_get",
    "manifest_get",
    "manifest_requests",
    "requests",
    "unheld_mounts",
    "uploads",
]

# Hop-by-hop headers (RFC 9110 section 7.6.1) are never forwarded; h11 frames each side itself.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)


@dataclass
class _Upstream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))

    def close(self) -> None:
        self.writer.close()


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The next h11 event, reading from the socket as h11 needs."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(CHUNK_SIZE))


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        writer.write(data)
        await writer.drain()


class FaultProxy(LoopbackServer):
    """The proxy; `start()` runs it in a thread, `stop()` ends it. Listens on 127.0.0.1."""

    def __init__(self, upstream_url: str, *, seed: int = 0) -> None:
        super().__init__()
        self.upstream_host, self.upstream_port = loopback_address(upstream_url)
        self.upstream_authority = f"{self.upstream_host}:{self.upstream_port}"
        self.faults: list[Fault] = []
        self.records: list[RequestRecord] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def requests_seen(self) -> int:
        """How many requests reached the proxy."""
        return len(self.records)

    @property
    def faults_injected(self) -> int:
        """How many times any fault fired."""
        return sum(fault.injected for fault in self.faults)

    def add(self, fault: Fault) -> Fault:
        """Add a fault rule (after the existing ones); return it for its counter."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault rule; the proxy passes everything through."""
        with self._lock:
            self.faults.clear()

    def _choose(self, request: ProxiedRequest) -> Fault | None:
        with self._lock:
            chosen = None
            for fault in self.faults:
                if not fault.match(request):
                    continue
                if fault.times is not None and fault.injected >= fault.times:
                    continue
                if fault.share is not None and self._rng.random() >= fault.share:
                    continue
                fault.injected += 1
                chosen = fault
                break
            self.records.append(
                RequestRecord(
                    request.method,
                    request.target,
                    time.monotonic(),
                    chosen.kind if chosen else None,
                )
            )
            return chosen

    # -- one client connection ----------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve the client's requests in turn, each one faulted or forwarded."""
        client = h11.Connection(h11.SERVER)
        upstream: _Upstream | None = None
        try:
            while True:
                event = await _next_event(client, reader)
                if not isinstance(event, h11.Request):
                    break
                request = ProxiedRequest(event.method.decode(), event.target.decode())
                fault = self._choose(request)
                if fault is not None and fault.kind is FaultKind.STATUS:
                    await self._answer_status(client, reader, writer, fault)
                elif fault is not None and fault.kind is FaultKind.SERVE_BODY:
                    await self._serve_body(client, reader, writer, fault)
                elif fault is not None and fault.kind is FaultKind.REDIRECT:
                    await self._redirect(client, reader, writer, fault, event.target)
                else:
                    if fault is not None and fault.kind is FaultKind.STALL:
                        await asyncio.sleep(fault.stall_seconds)
                    if upstream is None or upstream.conn.our_state is not h11.IDLE:
                        if upstream is not None:
                            upstream.close()
                        upstream = _Upstream(
                            *await asyncio.open_connection(self.upstream_host, self.upstream_port)
                        )
                    if not await self._forward(client, reader, writer, upstream, event, fault):
                        break
                    if upstream.conn.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
                        upstream.conn.start_next_cycle()
                if client.our_state is not h11.DONE or client.their_state is not h11.DONE:
                    break
                client.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            if upstream is not None:
                upstream.close()
            with contextlib.suppress(Exception):
                writer.close()

    async def _drain_request_body(
        self, client: h11.Connection, reader: asyncio.StreamReader
    ) -> None:
        while not isinstance(await _next_event(client, reader), h11.EndOfMessage):
            pass

    async def _answer_status(
        self,
        client: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault,
    ) -> None:
        await self._drain_request_body(client, reader)
        codes = {429: "TOOMANYREQUESTS", 401: "UNAUTHORIZED"}
        code = fault.error_code or codes.get(fault.status, "UNAVAILABLE")
        body = b'{"errors":[{"code":"' + code.encode() + b'","message":"injected by fault proxy"}]}'
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers.extend((name.encode(), value.encode()) for name, value in fault.headers)
        retry_after = fault.retry_after()
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode()))
        await _send(client, writer, h11.Response(status_code=fault.status, headers=headers))
        await _send(client, writer, h11.Data(data=body))
        await _send(client, writer, h11.EndOfMessage())

    async def _serve_body(
        self,
        client: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault,
    ) -> None:
        await self._drain_request_body(client, reader)
        digest = "sha256:" + hashlib.sha256(fault.body).hexdigest()
        headers = [
            (b"content-type", fault.content_type.encode()),
            (b"content-length", str(len(fault.body)).encode()),
            (b"docker-content-digest", digest.encode()),
        ]
        await _send(client, writer, h11.Response(status_code=200, headers=headers))
        await _send(client, writer, h11.Data(data=fault.body))  # h11 drops it for a HEAD
        await _send(client, writer, h11.EndOfMessage())

    async def _redirect(
        self,
        client: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault,
        target: bytes,
    ) -> None:
        await self._drain_request_body(client, reader)
        location = fault.redirect_to.encode() + target
        headers = [(b"location", location), (b"content-length", b"0")]
        await _send(client, writer, h11.Response(status_code=307, headers=headers))
        await _send(client, writer, h11.EndOfMessage())

    def _rewrite_location(self, value: bytes) -> bytes:
        text = value.decode("latin-1")
        for upstream in (f"http://{self.upstream_authority}", f"//{self.upstream_authority}"):
            if text.startswith(upstream):
                return (
                    text.replace(upstream, upstream.split("//")[0] + "//" + self.host, 1)
                ).encode()
        return value

    async def _forward(
        self,
        client: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: _Upstream,
        request: h11.Request,
        fault: Fault | None,
    ) -> bool:
        """Forward one exchange; False when the client connection must end."""
        headers = [
            (name, self.upstream_authority.encode() if name == b"host" else value)
            for name, value in request.headers
            if name not in HOP_BY_HOP
        ]
        await _send(
            upstream.conn,
            upstream.writer,
            h11.Request(method=request.method, target=request.target, headers=headers),
        )
        while True:
            event = await _next_event(client, reader)
            if isinstance(event, h11.Data):
                await _send(upstream.conn, upstream.writer, h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await _send(upstream.conn, upstream.writer, h11.EndOfMessage())
                break
            else:
                return False
        response = await _next_event(upstream.conn, upstream.reader)
        while isinstance(response, h11.InformationalResponse):
            response = await _next_event(upstream.conn, upstream.reader)
        if not isinstance(response, h11.Response):
            return False
        out_headers = [
            (name, self._rewrite_location(value) if name == b"location" else value)
            for name, value in response.headers
            if name not in HOP_BY_HOP
        ]
        kind = fault.kind if fault is not None else None
        await _send(
            client, writer, h11.Response(status_code=response.status_code, headers=out_headers)
        )
        length = dict(response.headers).get(b"content-length")
        keep = None
        if kind in (FaultKind.TRUNCATE, FaultKind.RESET):
            assert fault is not None
            keep = fault.keep_bytes if fault.keep_bytes is not None else int(length or 0) // 2
        sent = 0
        while True:
            event = await _next_event(upstream.conn, upstream.reader)
            if isinstance(event, h11.EndOfMessage):
                break
            if not isinstance(event, h11.Data):
                return False
            data = bytes(event.data)
            if kind is FaultKind.CORRUPT and sent == 0 and data:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            if keep is not None and sent + len(data) >= keep:
                await _send(client, writer, h11.Data(data=data[: keep - sent]))
                self._cut(writer, rst=kind is FaultKind.RESET)
                return False  # the caller closes the upstream: it is mid-body
            sent += len(data)
            if kind is FaultKind.TRICKLE:
                assert fault is not None
                await self._trickle(client, writer, data, fault.trickle_bytes_per_second)
                continue
            await _send(client, writer, h11.Data(data=data))
        await _send(client, writer, h11.EndOfMessage())
        return True

    @staticmethod
    async def _trickle(
        client: h11.Connection, writer: asyncio.StreamWriter, data: bytes, per_second: int
    ) -> None:
        """Send `data` in pieces of `per_second` bytes, one piece a second."""
        for start in range(0, len(data), per_second):
            await _send(client, writer, h11.Data(data=data[start : start + per_second]))
            await asyncio.sleep(1.0)

    @staticmethod
    def _cut(writer: asyncio.StreamWriter, *, rst: bool) -> None:
        if rst:
            reset(writer)
        else:
            writer.close()
