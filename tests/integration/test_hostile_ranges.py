"""Resumed downloads from a hostile source: its answers to `Range: bytes=N-` lie.

A tiny fake source registry (as in test_hostile_registry.py: a real registry cannot be made to
lie) serves one image whose 3 MiB layer it cuts after 1 MiB on every GET without a Range, and
answers the resumed GET (`Range: bytes=N-`) one hostile way per case: a 206 whose Content-Range
names N but whose body starts at byte 0, a 200 with the whole blob (a server that ignores
Range: the one honest fallback), a 206 starting past N, a 206 with fewer bytes than it names,
and a 206 with more. `replicator copy` to a real docker-registry must refuse every lie — the
layer never lands, nor the tag — and complete the copy only from the 200.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support import skopeo
from tests.support.copy_cli import run_copy
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MIB = 1024 * 1024
LAYER_BYTES = 3 * MIB
# A GET without Range is cut after this many bytes (the link drops mid-blob).
CUT_AFTER = MIB
# The range-beyond case starts its 206 this far past the byte asked for.
BEYOND = 1000
LAYER = bytes((n * 7 + n // 251) % 256 for n in range(LAYER_BYTES))
CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


LAYER_DIGEST, CONFIG_DIGEST = _digest(LAYER), _digest(CONFIG)
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": CONFIG_DIGEST,
            "size": len(CONFIG),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": LAYER_DIGEST,
                "size": LAYER_BYTES,
            }
        ],
    }
).encode()
MANIFEST_DIGEST = _digest(MANIFEST)
_RANGE = re.compile(r"bytes=(\d+)-$")
# How each lie is refused: bytes that do not continue the blob fail its digest (permanent); a
# 206 that does not start where asked is refused before its body is read.
REFUSED_WITH = {
    "lying-start": "DIGEST_MISMATCH",
    "beyond": "REGISTRY_ERROR",
    "short-206": "DIGEST_MISMATCH",
    "long-206": "DIGEST_MISMATCH",
}


@dataclass
class HostileSource:
    """The fake source; `mode` picks its answer to a resumed GET."""

    mode: str
    server: ThreadingHTTPServer
    resumed: list[int]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


def _resumed_answer(mode: str, offset: int) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body answering `Range: bytes=offset-` the `mode` way."""
    end = LAYER_BYTES - 1
    honest_range = f"bytes {offset}-{end}/{LAYER_BYTES}"
    match mode:
        case "lying-start":
            return 206, {"Content-Range": honest_range}, LAYER
        case "whole-200":
            return 200, {}, LAYER
        case "beyond":
            start = offset + BEYOND
            return 206, {"Content-Range": f"bytes {start}-{end}/{LAYER_BYTES}"}, LAYER[start:]
        case "short-206":
            rest = LAYER[offset:]
            return 206, {"Content-Range": honest_range}, rest[: len(rest) // 2]
        case "long-206":
            return 206, {"Content-Range": honest_range}, LAYER[offset:] + b"\0" * BEYOND
    raise AssertionError(mode)


def _handler(source: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _send(self, status: int, headers: dict[str, str], body: bytes, *, head: bool) -> None:
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _answer(self, *, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/v2/":
                self._send(200, {}, b"{}", head=head)
            elif path in ("/v2/team/app/manifests/v1", f"/v2/team/app/manifests/{MANIFEST_DIGEST}"):
                headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": MANIFEST_DIGEST}
                self._send(200, headers, MANIFEST, head=head)
            elif path == f"/v2/team/app/blobs/{CONFIG_DIGEST}":
                self._send(200, {"Docker-Content-Digest": CONFIG_DIGEST}, CONFIG, head=head)
            elif path == f"/v2/team/app/blobs/{LAYER_DIGEST}":
                self._layer(head=head)
            else:
                error = {"errors": [{"code": "NAME_UNKNOWN", "message": "not here"}]}
                self._send(
                    404, {"Content-Type": "application/json"}, json.dumps(error).encode(), head=head
                )

        def _layer(self, *, head: bool) -> None:
            asked = _RANGE.match(self.headers.get("Range", ""))
            if head:
                self._send(200, {"Docker-Content-Digest": LAYER_DIGEST}, LAYER, head=True)
            elif asked is None or int(asked.group(1)) == 0:
                # The whole blob announced, the link cut after CUT_AFTER bytes.
                self.send_response(200)
                self.send_header("Content-Length", str(LAYER_BYTES))
                self.end_headers()
                self.wfile.write(LAYER[:CUT_AFTER])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
            else:
                offset = int(asked.group(1))
                source["resumed"].append(offset)
                status, headers, body = _resumed_answer(source["mode"], offset)
                self._send(status, headers, body, head=False)

        def do_GET(self) -> None:
            self._answer(head=False)

        def do_HEAD(self) -> None:
            self._answer(head=True)

    return Handler


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[HostileSource]:
    """The fake source answering resumed GETs the parametrized way."""
    state: dict[str, Any] = {"mode": request.param, "resumed": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HostileSource(request.param, server, state["resumed"])
    finally:
        server.shutdown()
        server.server_close()


class TestHostileRanges:
    """A resumed read takes only an answer that continues the blob where it stopped."""

    @pytest.mark.parametrize("hostile", sorted(REFUSED_WITH), indirect=True)
    def test_lying_answer_is_refused_and_nothing_lands(
        self, hostile: HostileSource, dst_registry: Registry
    ) -> None:
        """A resumed GET answered with a lying or wrong-length 206 fails the copy; the layer
        and the tag never land at the destination."""
        run = run_copy(f"{hostile.host}/team/app:v1", f"{dst_registry.host}/team/app:v1")
        assert hostile.resumed, "the read was resumed with a Range"
        print(f"{hostile.mode}: resumed at {hostile.resumed[:3]}, codes {run.failure_codes}")
        assert run.exit_code == 1, str(run)
        assert run.failure_codes == [REFUSED_WITH[hostile.mode]], str(run)
        assert not dst_registry.has_blob(LAYER_DIGEST)
        assert skopeo.list_tags(f"{dst_registry.host}/team/app") == []

    @pytest.mark.parametrize("hostile", ["whole-200"], indirect=True)
    def test_whole_blob_again_completes_the_copy(
        self, hostile: HostileSource, dst_registry: Registry
    ) -> None:
        """A server that ignores Range and sends the whole blob again (200): the bytes already
        held are dropped and the copy lands the right layer."""
        run = run_copy(f"{hostile.host}/team/app:v1", f"{dst_registry.host}/team/app:v1")
        assert hostile.resumed, "the read was resumed with a Range"
        assert run.exit_code == 0, str(run)
        assert dst_registry.has_blob(LAYER_DIGEST)
        assert skopeo.list_tags(f"{dst_registry.host}/team/app") == ["v1"]
