"""Destination registries report their manifest pushes here: the latency clock stops on the
registry's own word instead of HEAD polling.

Polling every 10 ms sent ~25 HEADs per push to the registries being measured, on the same two
cores as the copy: the observer slowed what it observed. Each destination's `notifications`
endpoint points at this receiver (one path per registry); distribution posts the push event
once the manifest is stored. The bench then confirms with one HEAD that the tag is served, and
only if it is not yet does it poll, so every figure is still "visible to a client".
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Largest notification body read (distribution batches at most a few events per envelope).
MAX_BODY_BYTES = 1024 * 1024


class Arrivals:
    """An HTTP receiver of distribution envelopes: first arrival time of each (path, tag) push."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._changed = threading.Condition()
        arrivals = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("content-length", "0") or 0), MAX_BODY_BYTES)
                arrivals.record(self.path, self.rfile.read(length), time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        """The notifications URL for the registry called `name`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{name}"

    def record(self, path: str, body: bytes, when: float) -> None:
        """Note each tagged manifest push of an envelope, first arrival only."""
        try:
            events = json.loads(body).get("events", [])
        except (ValueError, AttributeError):
            return
        with self._changed:
            for event in events:
                target = event.get("target", {})
                if event.get("action") == "push" and target.get("tag"):
                    self._seen.setdefault((path.strip("/"), target["tag"]), when)
            self._changed.notify_all()

    def wait(self, names: list[str], tag: str, timeout: float) -> dict[str, float]:
        """Arrival time of the push of `tag` at each registry of `names`; TimeoutError when one
        has not arrived within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all((name, tag) in self._seen for name in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if (n, tag) not in self._seen]
                    raise TimeoutError(f"no push event of {tag} from {missing}")
                self._changed.wait(left)
            return {name: self._seen[(name, tag)] for name in names}

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
