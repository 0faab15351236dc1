"""`replicator copy` from a lying source registry: oversized manifests, a 10,000-child index, a
cycle of two indexes, an index nested past MAX_TREE_DEPTH. Each is refused with INVALID_MANIFEST,
memory stays flat, the client stops reading at the cap, and nothing lands at the destination.

A real registry cannot serve these (it validates manifests on push), so a tiny fake registry
in this module serves them: the case ARCHITECTURE §8 allows a fake for. A source whose blob
bytes do not match their digest is tested in test_copy_faults.py (TestCorruptSource).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from replicator.domain.images.manifests import MAX_CHILDREN, MAX_MANIFEST_BYTES
from replicator.engine.tree import MAX_TREE_BYTES, MAX_TREE_DEPTH
from replicator.registry.client import SMALL_REQUESTS_PER_SLOT
from replicator.registry.settings import DEFAULT_MAX_IN_FLIGHT
from tests.support.copy_cli import PROJECT_ROOT
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MIB = 1024 * 1024
# What the lying source streams for an oversized manifest: 32 times the cap, generated on the
# fly, so a client that read it all would show it in its peak memory.
HUGE_BODY_BYTES = 32 * MAX_MANIFEST_BYTES
# Loopback socket buffers hold a few MiB in flight: the server may have written this much past
# what the client read before it noticed the client had gone.
SOCKET_SLACK_BYTES = 16 * MIB
# Peak RSS of `replicator copy`: 32 MiB for a copy that fails at once, 41 MiB with a capped
# 8 MiB manifest in hand (measured); a client that buffered the 256 MiB body would be far over.
PEAK_RSS_LIMIT_KIB = 96 * 1024
STREAM_CHUNK = 64 * 1024
COPY_TIMEOUT_SECONDS = 120.0
MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")


def digest(data: bytes) -> str:
    """The sha256 digest of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def document(value: dict[str, Any]) -> bytes:
    """Manifest bytes of a JSON object."""
    return json.dumps(value, separators=(",", ":")).encode()


def index_of(*children: str, media_type: str = OCI_INDEX, size: int = 100) -> bytes:
    """An OCI index listing `children` (digests) as manifests of `media_type` and `size`."""
    return document({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": media_type, "digest": d, "size": size} for d in children],
    })  # fmt: skip


IMAGE = document({
    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": digest(b"config"), "size": 6},
    "layers": [],
})  # fmt: skip


@dataclass
class Served:
    """One manifest the fake serves: bytes, or `stream_bytes` of filler (huge manifests)."""

    body: bytes = b""
    media_type: str = OCI_INDEX
    stream_bytes: int = 0
    declare_length: bool = True
    claimed_digest: str | None = None


@dataclass
class FakeRegistry:
    """A lying source registry: serves `manifests` by tag or digest, records requests and how
    many body bytes it managed to send."""

    manifests: dict[str, Served]
    requests: list[tuple[str, str]] = field(default_factory=list)
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    host: str = ""


def _handler(fake: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads `fake.requests` instead."""

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            with fake.lock:
                fake.requests.append((self.command, self.path))
            if self.path == "/v2/":
                self._empty(200)
                return
            found = MANIFEST_PATH.match(self.path)
            served = fake.manifests.get(found["reference"]) if found else None
            if served is None:
                self._empty(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", served.media_type)
            self.send_header("Docker-Content-Digest", served.claimed_digest or digest(served.body))
            size = served.stream_bytes or len(served.body)
            if served.declare_length:
                self.send_header("Content-Length", str(size))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if body:
                self._send_body(served)

        def _send_body(self, served: Served) -> None:
            if not served.stream_bytes:
                self.wfile.write(served.body)
                return
            chunk = b" " * STREAM_CHUNK
            try:
                for _ in range(served.stream_bytes // STREAM_CHUNK):
                    self.wfile.write(chunk)
                    with fake.lock:
                        fake.bytes_sent += len(chunk)
            except OSError:
                self.close_connection = True  # the client hung up: what the test wants

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    """A fake source on a free loopback port; tests fill in `manifests`."""
    fake = FakeRegistry(manifests={})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class MeasuredRun:
    """Exit code, output and peak RSS of one `replicator copy`."""

    exit_code: int
    stdout: str
    stderr: str
    peak_rss_kib: int

    def __str__(self) -> str:
        return f"exit {self.exit_code}, peak {self.peak_rss_kib} KiB\n{self.stderr[-3000:]}"


_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
    " file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def copy_measured(src: str, dst: str) -> MeasuredRun:
    """`replicator copy SRC DST` in a wrapper that reports the copy's peak RSS."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "replicator", "copy", src, dst],
        capture_output=True,
        text=True,
        timeout=COPY_TIMEOUT_SECONDS,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    peak = re.search(r"PEAK_RSS_KIB (\d+)", result.stderr)
    assert peak, result.stderr
    return MeasuredRun(result.returncode, result.stdout, result.stderr, int(peak.group(1)))


def manifest_gets(fake: FakeRegistry) -> list[str]:
    """References of the manifest GETs the fake served."""
    return [
        found["reference"]
        for method, path in fake.requests
        if method == "GET" and (found := MANIFEST_PATH.match(path))
    ]


class TestOversizedManifest:
    """A manifest over MAX_MANIFEST_BYTES is refused without being read whole."""

    @pytest.mark.parametrize(
        ("declare_length", "message"),
        [
            pytest.param(True, "over the", id="declared-length"),
            pytest.param(False, "exceeds the", id="no-length-streamed"),
        ],
    )
    def test_refused_at_the_cap(
        self,
        fake_registry: FakeRegistry,
        dst_registry: Registry,
        declare_length: bool,
        message: str,
    ) -> None:
        """A 256 MiB manifest (announced or not) fails INVALID_MANIFEST naming the cap; the
        client stops reading at the cap (the fake sent less than cap + socket slack) and its
        peak RSS stays under PEAK_RSS_LIMIT_KIB; nothing lands."""
        claimed = digest(b"huge")
        huge = Served(
            stream_bytes=HUGE_BODY_BYTES,
            media_type=OCI_MANIFEST,
            declare_length=declare_length,
            claimed_digest=claimed,
        )
        fake_registry.manifests.update({"v1": huge, claimed: huge})
        run = copy_measured(f"{fake_registry.host}/app:v1", f"{dst_registry.host}/app:v1")
        assert run.exit_code == 1, str(run)
        assert "INVALID_MANIFEST" in run.stderr
        assert f"{message} {MAX_MANIFEST_BYTES}" in run.stderr, str(run)
        assert fake_registry.bytes_sent < MAX_MANIFEST_BYTES + SOCKET_SLACK_BYTES
        assert run.peak_rss_kib < PEAK_RSS_LIMIT_KIB, str(run)
        assert dst_registry.repositories() == []


class TestHostileIndexes:
    """Indexes too wide, cyclic, or too deep are refused before any child is copied."""

    def test_ten_thousand_children(
        self, fake_registry: FakeRegistry, dst_registry: Registry
    ) -> None:
        """An index of 10,000 children (over MAX_CHILDREN) fails INVALID_MANIFEST naming the
        limit; no child is requested, memory stays flat, nothing lands."""
        children = [digest(f"child-{n}".encode()) for n in range(10_000)]
        wide = Served(body=index_of(*children, media_type=OCI_MANIFEST))
        fake_registry.manifests.update({"v1": wide, digest(wide.body): wide})
        run = copy_measured(f"{fake_registry.host}/app:v1", f"{dst_registry.host}/app:v1")
        assert run.exit_code == 1, str(run)
        assert f"10000 entries, more than the limit of {MAX_CHILDREN}" in run.stderr, str(run)
        assert set(manifest_gets(fake_registry)) == {digest(wide.body)}
        assert run.peak_rss_kib < PEAK_RSS_LIMIT_KIB, str(run)
        assert dst_registry.repositories() == []

    def test_cycle_of_two_indexes(
        self, fake_registry: FakeRegistry, dst_registry: Registry
    ) -> None:
        """A lists B, and the fake answers B's digest with an index listing A: B's bytes do
        not hash to B (a real cycle cannot be hashed), so the copy fails INVALID_MANIFEST
        after fetching each manifest once; nothing lands."""
        b_claimed = digest(b"the index B would be")
        # A declares B's size truly (an index listing one digest has the same length whatever
        # the digest), so it is the digest check, not the size check, that breaks the cycle.
        b_size = len(index_of(b_claimed))
        a = Served(body=index_of(b_claimed, size=b_size))
        a_digest = digest(a.body)
        b = Served(body=index_of(a_digest), claimed_digest=b_claimed)
        fake_registry.manifests.update({"v1": a, a_digest: a, b_claimed: b})
        run = copy_measured(f"{fake_registry.host}/app:v1", f"{dst_registry.host}/app:v1")
        assert run.exit_code == 1, str(run)
        assert "INVALID_MANIFEST" in run.stderr
        assert f"not the requested {b_claimed}" in run.stderr, str(run)
        assert sorted(manifest_gets(fake_registry)) == sorted([a_digest, b_claimed])
        assert dst_registry.repositories() == []

    def test_nesting_past_the_depth_bound(
        self, fake_registry: FakeRegistry, dst_registry: Registry
    ) -> None:
        """A chain of honestly hashed indexes nested MAX_TREE_DEPTH + 2 deep fails
        INVALID_MANIFEST ("nests deeper than"); the walk stops at the bound, nothing lands."""
        body = IMAGE
        fake_registry.manifests[digest(body)] = Served(body=body, media_type=OCI_MANIFEST)
        child_type = OCI_MANIFEST
        for _ in range(MAX_TREE_DEPTH + 2):
            body = index_of(digest(body), media_type=child_type, size=len(body))
            fake_registry.manifests[digest(body)] = Served(body=body)
            child_type = OCI_INDEX
        fake_registry.manifests["v1"] = Served(body=body)
        run = copy_measured(f"{fake_registry.host}/app:v1", f"{dst_registry.host}/app:v1")
        assert run.exit_code == 1, str(run)
        assert f"nests deeper than {MAX_TREE_DEPTH}" in run.stderr, str(run)
        assert len(manifest_gets(fake_registry)) == MAX_TREE_DEPTH + 1
        assert dst_registry.repositories() == []


# Children of the heavy index: each a valid image manifest padded (JSON allows trailing space)
# to CHILD_BYTES, together four times MAX_TREE_BYTES.
CHILD_BYTES = 4 * MIB
HEAVY_CHILDREN = 4 * MAX_TREE_BYTES // CHILD_BYTES


class TestHeavyTree:
    """An index tree's total bytes are capped, not only each manifest's."""

    @pytest.mark.parametrize("honest_sizes", [True, False], ids=["declared", "understated"])
    def test_tree_over_the_byte_cap_is_refused(
        self, fake_registry: FakeRegistry, dst_registry: Registry, honest_sizes: bool
    ) -> None:
        """An index of children of 4 MiB each, four times MAX_TREE_BYTES in all, fails
        INVALID_MANIFEST: naming the cap at once when the index declares the sizes; naming the
        size its descriptor says at the first child read when it understates them; memory
        stays flat, nothing lands."""
        children = []
        for n in range(HEAVY_CHILDREN):
            body = IMAGE[:-1] + f',"annotations":{{"n":"{n}"}}}}'.encode()
            body += b" " * (CHILD_BYTES - len(body))
            fake_registry.manifests[digest(body)] = Served(body=body, media_type=OCI_MANIFEST)
            children.append(digest(body))
        heavy = document({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": d,
                           "size": CHILD_BYTES if honest_sizes else 100} for d in children],
        })  # fmt: skip
        fake_registry.manifests.update(
            {"v1": Served(body=heavy), digest(heavy): Served(body=heavy)}
        )
        run = copy_measured(f"{fake_registry.host}/app:v1", f"{dst_registry.host}/app:v1")
        assert run.exit_code == 1, str(run)
        expected = f"more than the {MAX_TREE_BYTES} bytes" if honest_sizes else "descriptor says"
        assert expected in run.stderr, str(run)
        fetched = len(manifest_gets(fake_registry)) - 1
        print(f"HEAVY_TREE fetched {fetched} children, peak RSS {run.peak_rss_kib} KiB")
        # Declared: none fetched. Understated: the first child read shows the lie (its size
        # is not its descriptor's); at most what was in flight then was read.
        in_flight = DEFAULT_MAX_IN_FLIGHT * SMALL_REQUESTS_PER_SLOT
        assert fetched <= (0 if honest_sizes else in_flight), fetched
        assert run.peak_rss_kib < PEAK_RSS_LIMIT_KIB, str(run)
        assert dst_registry.repositories() == []


class TestSha512Children:
    def test_child_named_by_sha512_is_refused(
        self, fake_registry: FakeRegistry, dst_registry: Registry
    ) -> None:
        """An index naming a child by a `sha512:` digest fails INVALID_MANIFEST naming it, at
        once: registries store manifests by sha256, so the index could not be copied as it is
        (and the child is never fetched, let alone trusted)."""
        sha512 = "sha512:" + hashlib.sha512(IMAGE).hexdigest()
        fake_registry.manifests[sha512] = Served(body=IMAGE, media_type=OCI_MANIFEST)
        index = Served(body=index_of(sha512, media_type=OCI_MANIFEST, size=len(IMAGE)))
        fake_registry.manifests.update({"v1": index, digest(index.body): index})
        run = copy_measured(f"{fake_registry.host}/app:v1", f"{dst_registry.host}/app:v1")
        assert run.exit_code == 1, str(run)
        assert "INVALID_MANIFEST" in run.stderr, str(run)
        assert sha512 in run.stderr, str(run)
        assert sha512 not in manifest_gets(fake_registry)
        assert dst_registry.repositories() == []
