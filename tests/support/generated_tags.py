"""A registry that lists a generated number of tags, for scans at scale (run as a process).

    python -m tests.support.generated_tags --port P --tags 100000 [--holds]

It serves one repository, `big/app`, whose tags are `t0000000`, `t0000001`, ... computed from the
page asked for (nothing is held per tag): `GET /v2/_catalog`, `GET /v2/big/app/tags/list` paged
by `n` and `last` with an RFC 8288 `Link` to the next page, and `HEAD` of a tag's manifest —
200 with one digest for every tag when started with `--holds` (a source, or a destination that
is up to date), else 404 MANIFEST_UNKNOWN (a destination that has none, whose tag list is then
empty). Started with `--accepts`, a destination that has none takes every copy into it and
forgets it at once: blob HEADs answer 200 (it has the image's one blob) and manifest PUTs 201, so
a real backfill copies every tag, and the next scan finds every tag missing again (a repair).
`GET /stats` says how many requests it served, manifests were PUT and tag names were listed.
Requests are parsed by hand (request line and headers; a body is read and dropped):
docker-registry answers a few thousand HEADs a second, too slow to scan a million tags in a test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support.ports import free_port, wait_listening

REPOSITORY = "big/app"
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + "0" * 64,
            "size": 2,
        },
        "layers": [],
    }
).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
BLOB_DIGEST = "sha256:" + "0" * 64
# Distribution's default and largest page.
MAX_PAGE = 1000
# Lines of a request head we read at most (a client sends a handful).
MAX_HEAD_LINES = 100


def tag(index: int) -> str:
    """The name of tag number `index` (names sort as their numbers do)."""
    return f"t{index:07d}"


class GeneratedTags:
    """The server's answers for `tags` tags."""

    def __init__(self, tags: int, *, holds: bool, accepts: bool = False) -> None:
        self.tags = tags
        self.holds = holds
        self.accepts = accepts
        self.served = 0
        self.puts = 0
        self.listed = 0  # tag names listed, all pages together

    def answer(self, method: str, target: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for one request."""
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        if parts.path == "/stats":
            stats = {"served": self.served, "puts": self.puts, "listed": self.listed}
            return 200, [("content-type", "application/json")], json.dumps(stats).encode()
        self.served += 1
        if parts.path == "/v2/":
            return 200, [("content-type", "application/json")], b"{}"
        if parts.path == "/v2/_catalog":
            return 200, [("content-type", "application/json")], b'{"repositories":["big/app"]}'
        if parts.path == f"/v2/{REPOSITORY}/tags/list":
            return self._page(query)
        prefix = f"/v2/{REPOSITORY}/manifests/"
        if parts.path.startswith(prefix) and method == "PUT" and self.accepts:
            self.puts += 1
            headers = [("docker-content-digest", DIGEST), ("location", f"{prefix}{DIGEST}")]
            return 201, headers, b""
        if parts.path.startswith(f"/v2/{REPOSITORY}/blobs/") and method == "HEAD" and self.accepts:
            return 200, [("content-length", "2"), ("docker-content-digest", BLOB_DIGEST)], b""
        if parts.path.startswith(prefix) and method in ("HEAD", "GET"):
            if not self.holds or not self._holds(parts.path.removeprefix(prefix)):
                body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
                return 404, [("content-type", "application/json")], body
            headers = [
                ("content-type", "application/vnd.oci.image.manifest.v1+json"),
                ("docker-content-digest", DIGEST),
            ]
            return 200, headers, MANIFEST
        return 404, [("content-type", "application/json")], b'{"errors":[]}'

    def _holds(self, reference: str) -> bool:
        """Whether `reference` names the one image: its digest, or one of the tags."""
        if reference == DIGEST:
            return True
        number = reference.removeprefix("t")
        return len(reference) == len(tag(0)) and number.isdigit() and int(number) < self.tags

    def _page(self, query: dict[str, list[str]]) -> tuple[int, list[tuple[str, str]], bytes]:
        size = min(MAX_PAGE, int(query.get("n", [str(MAX_PAGE)])[0]))
        last = query.get("last", [""])[0]
        start = int(last[1:]) + 1 if last else 0
        listed = self.tags if self.holds else 0
        end = min(listed, start + size)
        names = [tag(i) for i in range(start, end)]
        self.listed += len(names)
        headers = [("content-type", "application/json")]
        if end < listed:
            link = f"/v2/{REPOSITORY}/tags/list?n={size}&last={tag(end - 1)}"
            headers.append(("link", f'<{link}>; rel="next"'))
        return 200, headers, json.dumps({"name": REPOSITORY, "tags": names}).encode()


async def _serve(server: GeneratedTags, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                length = 0
                for _ in range(MAX_HEAD_LINES):
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)  # a manifest PUT's body, not kept
                status, headers, body = server.answer(method, target)
                head = [f"HTTP/1.1 {status} X"]
                if not any(name == "content-length" for name, _ in headers):
                    head.append(f"content-length: {len(body)}")
                head += [f"{name}: {value}" for name, value in headers]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
                if method != "HEAD":
                    writer.write(body)
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    async with listening:
        await listening.serve_forever()


class GeneratedTagsProcess:
    """The server in a process of its own (it uses another core than the scan it serves)."""

    def __init__(self, tags: int, *, holds: bool, accepts: bool = False) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        command = [sys.executable, "-m", "tests.support.generated_tags"]
        command += ["--port", str(self.port), "--tags", str(tags)]
        command += ["--holds"] if holds else []
        self._process = subprocess.Popen([*command, *(["--accepts"] if accepts else [])])
        wait_listening(self.port)

    def served(self) -> int:
        """Requests served so far."""
        served: int = httpx.get(f"{self.url}/stats").json()["served"]
        return served

    def stats(self) -> dict[str, int]:
        """Requests served, manifests PUT (copies taken, with `accepts`) and tag names listed
        so far."""
        stats: dict[str, int] = httpx.get(f"{self.url}/stats").json()
        return stats

    def stop(self) -> None:
        """Stop the process."""
        self._process.terminate()
        self._process.wait(10)


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tags", type=int, required=True)
    parser.add_argument("--holds", action="store_true")
    parser.add_argument("--accepts", action="store_true")
    args = parser.parse_args()
    server = GeneratedTags(args.tags, holds=args.holds, accepts=args.accepts)
    asyncio.run(_serve(server, args.port))


if __name__ == "__main__":
    main()
