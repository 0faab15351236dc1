"""The blob-only floor of a copy: a plain client streaming only the corpus's distinct blobs.

    python -m bench.blob_floor SOURCE_HOST DESTINATION_HOST BLOBS.json [--in-flight 16]

BLOBS.json lists `[repository, digest, size]` once per distinct blob. Each blob is streamed from
the source (GET) into the same repository at the destination with the fewest requests the
destination accepts: one POST opening an upload session, then one PUT carrying the body and the
digest (docker-registry 2.8 answers a single `POST ?digest=` with a body 202 and drops the
body, so a monolithic one-request upload is not available there). No manifest, no HEAD, no
mount: what any copy of these images must at least do. Run as its own process, as `replicator
copy` is, so both pay a Python start-up and neither shares a GIL with the bench's delay relay.
Prints `{"seconds": ..., "blobs": ..., "bytes": ...}` and exits 1 when an upload failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

# As in the definition of the floor: 16 blobs in flight (replicator's own default
# `--concurrency`).
DEFAULT_IN_FLIGHT = 16
# A blob of 4 MiB through a 25 ms relay on a loaded 2-core machine takes well under a minute.
TIMEOUT = httpx.Timeout(120.0)


async def _copy_blob(
    source: httpx.AsyncClient, destination: httpx.AsyncClient, repository: str, digest: str
) -> int:
    opened = await destination.post(f"/v2/{repository}/blobs/uploads/")
    if opened.status_code != 202:
        raise RuntimeError(f"POST upload {repository}: {opened.status_code}")
    location = httpx.URL(opened.headers["location"]).copy_merge_params({"digest": digest})
    async with source.stream("GET", f"/v2/{repository}/blobs/{digest}") as body:
        body.raise_for_status()
        size = int(body.headers["content-length"])
        put = await destination.put(
            location,
            content=body.aiter_raw(),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
    if put.status_code != 201:
        raise RuntimeError(f"PUT {repository}@{digest}: {put.status_code} {put.text[:200]}")
    return size


async def copy_blobs(
    source_host: str, destination_host: str, blobs: list[tuple[str, str, int]], in_flight: int
) -> int:
    """Stream every blob, `in_flight` at once; returns the bytes moved."""
    limits = httpx.Limits(max_connections=in_flight * 2, max_keepalive_connections=in_flight * 2)
    gate = asyncio.Semaphore(in_flight)
    async with (
        httpx.AsyncClient(base_url=f"http://{source_host}", limits=limits, timeout=TIMEOUT) as src,
        httpx.AsyncClient(
            base_url=f"http://{destination_host}", limits=limits, timeout=TIMEOUT
        ) as dst,
    ):

        async def one(repository: str, digest: str) -> int:
            async with gate:
                return await _copy_blob(src, dst, repository, digest)

        sizes = await asyncio.gather(*(one(repository, digest) for repository, digest, _ in blobs))
    return sum(sizes)


def main(argv: list[str] | None = None) -> int:
    """Copy the listed blobs; print seconds and bytes as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_host")
    parser.add_argument("destination_host")
    parser.add_argument("blobs", type=Path)
    parser.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT)
    args = parser.parse_args(argv)
    blobs = [(str(r), str(d), int(n)) for r, d, n in json.loads(args.blobs.read_text())]
    started = time.monotonic()
    moved = asyncio.run(copy_blobs(args.source_host, args.destination_host, blobs, args.in_flight))
    seconds = time.monotonic() - started
    print(json.dumps({"seconds": round(seconds, 3), "blobs": len(blobs), "bytes": moved}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
