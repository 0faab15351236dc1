"""The registries' own floor for a no-op scan: a plain client sending the scan's requests.

    python -m bench.scan_floor SOURCE_URL DESTINATION_URL PREFIX [--in-flight 32]

Sends what `replicator backfill`'s no-op pass sends, and nothing else: the source's catalog
pages, then per repository under PREFIX its tag list at the source and one manifest HEAD per tag
at the source and at the destination. aiohttp's client (the least CPU per request of those
bench/transport_bench.py measures), `--in-flight` requests per registry (the engine's default
small-request slots: 8 x 4), every repository's requests queued at once, so the registries,
not the client, set the pace. Run as its own process, as the backfill is. Prints
`{"seconds": ..., "requests": ..., "heads": ...}`; exits 1 when a tag's HEAD differs between the
two registries or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

# The engine's small-request slots per registry (client.DEFAULT_MAX_IN_FLIGHT x
# SMALL_REQUESTS_PER_SLOT).
DEFAULT_IN_FLIGHT = 32
# Catalog page size asked for (distribution serves up to 1000 per page).
CATALOG_PAGE = 1000
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


async def scan(source: str, destination: str, prefix: str, in_flight: int) -> dict[str, int]:
    """Send the requests; return how many were sent and how many tags compared equal."""
    import aiohttp

    counts = {"requests": 0, "heads": 0, "equal": 0}
    limits = {source: asyncio.Semaphore(in_flight), destination: asyncio.Semaphore(in_flight)}
    connector = aiohttp.TCPConnector(limit=in_flight * 4)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(base: str, method: str, path: str) -> tuple[int, Any]:
            async with limits[base]:
                counts["requests"] += 1
                async with session.request(
                    method, base + path, headers={"Accept": MANIFEST_ACCEPT}
                ) as response:
                    if method == "GET":
                        return response.status, await response.json()
                    return response.status, response.headers.get("Docker-Content-Digest")

        repositories: list[str] = []
        last = ""
        while True:
            query = f"n={CATALOG_PAGE}" + (f"&last={last}" if last else "")
            _, page = await call(source, "GET", f"/v2/_catalog?{query}")
            names = page.get("repositories") or []
            repositories += [name for name in names if name.startswith(prefix)]
            if len(names) < CATALOG_PAGE:
                break
            last = names[-1]

        async def repository(name: str) -> None:
            _, listed = await call(source, "GET", f"/v2/{name}/tags/list")

            async def tag(tag: str) -> None:
                path = f"/v2/{name}/manifests/{tag}"
                (status_a, ours), (status_b, theirs) = await asyncio.gather(
                    call(source, "HEAD", path), call(destination, "HEAD", path)
                )
                counts["heads"] += 2
                if status_a == status_b == 200 and ours == theirs:
                    counts["equal"] += 1

            await asyncio.gather(*(tag(t) for t in listed.get("tags") or []))

        await asyncio.gather(*(repository(name) for name in repositories))
    counts["repositories"] = len(repositories)
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run the floor scan; print seconds and counts as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("prefix")
    parser.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT)
    args = parser.parse_args(argv)
    started = time.monotonic()
    counts = asyncio.run(scan(args.source, args.destination, args.prefix, args.in_flight))
    seconds = time.monotonic() - started
    print(json.dumps({"seconds": round(seconds, 3), **counts}))
    return 0 if counts["equal"] * 2 == counts["heads"] else 1


if __name__ == "__main__":
    sys.exit(main())
