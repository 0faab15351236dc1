"""Blob upload sessions that keep what a broken PATCH delivered, in front of a real registry.

docker-registry (distribution 2.8) cannot resume a broken upload: every upload URL carries a
signed `_state` with the offset it expects, a session holding other than that offset is ended by
the next request that names it, and its status GET always says `Range: 0-0`. Registries that
implement the distribution spec's status (the bytes actually held, `Range: 0-E`) can. This front
plays such a registry's upload endpoint: sessions live here (a file each, every byte a PATCH
delivered kept, even from a request the link broke), a status GET says what is held, and the
final PUT checks the digest and hands the blob whole to the registry behind over loopback.
Every other request is forwarded unchanged, so manifests, HEADs and tags are the real registry's.

    front = ResumingUploads(registry.url); front.start(); ...; front.stop()
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# Reads of a request body: small enough that a broken PATCH keeps nearly all it delivered.
CHUNK_SIZE = 64 * 1024
# Seconds a forwarded request may take at the registry behind (loopback, milliseconds).
UPSTREAM_TIMEOUT_SECONDS = 60.0
UPLOAD_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[0-9a-f-]*)$")
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"}
)


class ResumingUploads:
    """The front; `start()` serves it on a free loopback port in a thread, `stop()` ends it."""

    def __init__(self, upstream_url: str) -> None:
        found = re.fullmatch(r"http://(127\.0\.0\.1|localhost):(\d+)/?", upstream_url)
        if found is None:
            raise ValueError(f"upstream must be a loopback http URL, got {upstream_url!r}")
        self.upstream = (found[1], int(found[2]))
        self.directory = Path(tempfile.mkdtemp(prefix="replicator-resuming-uploads-"))
        self.status_asked = 0  # status GETs answered
        self.patches_broken = 0  # PATCHes whose body stopped short
        self.bytes_received = 0  # blob bytes PATCHes and PUTs delivered, kept or not
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` of the front."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        """Serve in a background thread."""
        front = self

        class Handler(_Handler):
            owner = front

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and delete the sessions."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def session(self, upload_id: str) -> Path:
        """The file holding a session's bytes."""
        return self.directory / upload_id

    def count(self, *, status: int = 0, broken: int = 0, received: int = 0) -> None:
        """Add to the counters."""
        with self._lock:
            self.status_asked += status
            self.patches_broken += broken
            self.bytes_received += received

    def held(self) -> int:
        """Bytes the open sessions hold, together."""
        return sum(path.stat().st_size for path in self.directory.iterdir())

    def drop_sessions(self) -> None:
        """Forget every open session, as a registry purging old uploads does."""
        for path in self.directory.iterdir():
            path.unlink()


class _Handler(BaseHTTPRequestHandler):
    owner: ResumingUploads
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads counters, not a log."""

    def do_POST(self) -> None:
        """A new upload session (a mount is answered as one the registry could not do)."""
        found = UPLOAD_PATH.match(urlsplit(self.path).path)
        if found is None or found["id"]:
            self._forward()
            return
        self._read_body(None)
        upload_id = str(uuid.uuid4())
        self.owner.session(upload_id).touch()
        self._session_answer(202, found["name"], upload_id)

    def do_PATCH(self) -> None:
        """Append the body at the session's offset (Content-Range must start there)."""
        name, upload_id, path = self._session()
        if path is None:
            return
        held = path.stat().st_size
        content_range = self.headers.get("Content-Range")
        if content_range and int(content_range.split("-", 1)[0]) != held:
            self._answer(416, {"Range": _range(held)})
            return
        with path.open("ab") as out:
            complete = self._read_body(out)
        if not complete:
            self.owner.count(broken=1)
            self.close_connection = True
            return
        self._session_answer(202, name, upload_id)

    def do_GET(self) -> None:
        """A session's status, or a request for the registry behind."""
        name, upload_id, path = self._session(forward_others=True)
        if path is None:
            return
        self.owner.count(status=1)
        self._session_answer(204, name, upload_id)

    do_HEAD = do_GET  # noqa: N815 - the name http.server dispatches HEAD to

    def do_PUT(self) -> None:
        """Commit: the last bytes, the digest checked, the blob handed whole to the registry."""
        name, _, path = self._session(forward_others=True)
        if path is None:
            return
        with path.open("ab") as out:
            if not self._read_body(out):
                self.close_connection = True
                return
        digest = parse_qs(urlsplit(self.path).query).get("digest", [""])[0]
        algorithm, _, expected = digest.partition(":")
        hasher = hashlib.new(algorithm or "sha256")
        with path.open("rb") as data:
            while chunk := data.read(1024 * 1024):
                hasher.update(chunk)
        if hasher.hexdigest() != expected:
            self._answer(400, {}, b'{"errors":[{"code":"DIGEST_INVALID","message":"digest"}]}')
            return
        status = self._push_upstream(name, digest, path)
        path.unlink()
        location = f"/v2/{name}/blobs/{digest}"
        self._answer(status, {"Location": location, "Docker-Content-Digest": digest})

    def do_DELETE(self) -> None:
        """End a session."""
        _, _, path = self._session(forward_others=True)
        if path is None:
            return
        path.unlink(missing_ok=True)
        self._answer(204, {})

    # -- helpers ------------------------------------------------------------------------------

    def _session(self, *, forward_others: bool = False) -> tuple[str, str, Path | None]:
        found = UPLOAD_PATH.match(urlsplit(self.path).path)
        if found is None or not found["id"]:
            if forward_others:
                self._forward()
            else:
                self._answer(404, {})
            return "", "", None
        path = self.owner.session(found["id"])
        if not path.exists():
            self._read_body(None)
            self._answer(404, {}, b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"gone"}]}')
            return "", "", None
        return found["name"], found["id"], path

    def _read_body(self, out: object) -> bool:
        """Read the body (into `out` if a file), flushing as it comes; False if it stopped
        short (the link broke)."""
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            try:
                chunk = self.rfile.read1(min(CHUNK_SIZE, remaining))
            except OSError:
                return False
            if not chunk:
                return False
            if out is not None:
                out.write(chunk)  # type: ignore[attr-defined]
                out.flush()  # type: ignore[attr-defined]
                self.owner.count(received=len(chunk))
            remaining -= len(chunk)
        return True

    def _session_answer(self, status: int, name: str, upload_id: str) -> None:
        held = self.owner.session(upload_id).stat().st_size
        self._answer(
            status,
            {
                "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
                "Range": _range(held),
                "Docker-Upload-UUID": upload_id,
            },
        )

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            if body:
                self.send_header("Content-Type", "application/json")
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _push_upstream(self, name: str, digest: str, path: Path) -> int:
        """POST a session at the registry behind, then PUT the whole blob into it."""
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=UPSTREAM_TIMEOUT_SECONDS)
        try:
            conn.request("POST", f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
            started = conn.getresponse()
            started.read()
            location = urlsplit(started.getheader("Location") or "")
            target = f"{location.path}?{location.query}&digest={digest}"
            with path.open("rb") as data:
                conn.request(
                    "PUT",
                    target,
                    body=data,
                    headers={
                        "Content-Length": str(path.stat().st_size),
                        "Content-Type": "application/octet-stream",
                    },
                )
                resp = conn.getresponse()
                resp.read()
                return resp.status
        finally:
            conn.close()

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = self.rfile.read(length) if length else None
        except OSError:
            self.close_connection = True
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=UPSTREAM_TIMEOUT_SECONDS)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {
                k: v
                for k, v in resp.getheaders()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
            }
            self._forwarded(resp.status, out, data, resp.getheader("Content-Length"))
        finally:
            conn.close()

    def _forwarded(
        self, status: int, headers: dict[str, str], data: bytes, length: str | None
    ) -> None:
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            size = length if self.command == "HEAD" and length else str(len(data))
            self.send_header("Content-Length", size)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:
            self.close_connection = True


def _range(held: int) -> str:
    return f"0-{max(held - 1, 0)}"
