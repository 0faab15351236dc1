"""CPU per request of the HTTP/1.1 clients a registry client could use, against docker-registry.

    .venv/bin/python bench/transport_bench.py [--heads 2000] [--gets 200] [--rounds 5]

Compares, on loopback against a real `docker-registry` (a separate process, so this process's
CPU time is the client's alone):

- `own`: the project's transport (replicator/registry/http/, `RegistryTransport`), called as
  RegistryClient calls it (`handle_async_request` with an httpx.Request);
- `httpx/httpcore`: httpx's default transport (`httpx.AsyncHTTPTransport`, httpcore's pool),
  called the same way: what the own transport replaced;
- `aiohttp`: aiohttp's `ClientSession` (the `bench` extra of pyproject.toml);
- `own + RegistryClient`: the full request path of the engine (slots, auth, typed errors,
  the capped body read), for scale.

Each client sends `--heads` manifest-size HEADs (`HEAD /v2/<repo>/blobs/<digest>`) and `--gets`
GETs of a 1 MiB blob (body read to the end and its length checked), `CONCURRENCY` in flight
like the engine's per-registry slots. CPU is `time.process_time()` (user + system of this
process) around each batch, so the load of a shared machine disturbs it far less than wall
time. Clients take turns within each of `--rounds` rounds (the order rotates every round); the
table shows the medians in microseconds of CPU per request, and the ratio of each client to the
own transport. Writes bench/results/transport-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from replicator.registry import blob_reads, blobs
from replicator.registry.connections import new_transport
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support.registry_server import Registry

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPOSITORY = "bench/transport"
BLOB_SIZE = 1024 * 1024
# Requests in flight per client: the engine's default per-registry transfer slots (8).
CONCURRENCY = 8
# Requests sent before measuring, so connections are open and code paths warm.
WARMUP = 50

Batch = Callable[[str, int], Awaitable[None]]


def _seed(registry: Registry) -> tuple[str, str]:
    """Push one 1 MiB blob; return its digest and the HEAD/GET path."""
    body = os.urandom(BLOB_SIZE)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    with httpx.Client(base_url=registry.url) as client:
        opened = client.post(f"/v2/{REPOSITORY}/blobs/uploads/")
        location = httpx.URL(opened.headers["location"]).copy_merge_params({"digest": digest})
        client.put(location, content=body).raise_for_status()
    return digest, f"/v2/{REPOSITORY}/blobs/{digest}"


async def _spread(count: int, one: Callable[[], Awaitable[None]]) -> None:
    """Run `one` `count` times, CONCURRENCY at once."""
    remaining = [count]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def _httpx_transport_batch(transport: httpx.AsyncBaseTransport, url: str) -> Batch:
    async def batch(method: str, count: int) -> None:
        async def one() -> None:
            response = await transport.handle_async_request(httpx.Request(method, url))
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
            await response.aclose()
            if response.status_code != 200 or received != (BLOB_SIZE if method == "GET" else 0):
                raise RuntimeError(f"{method} {url}: {response.status_code}, {received} bytes")

        await _spread(count, one)

    return batch


def _aiohttp_batch(session: Any, url: str) -> Batch:
    async def batch(method: str, count: int) -> None:
        async def one() -> None:
            async with session.request(method, url) as response:
                received = 0
                async for chunk in response.content.iter_any():
                    received += len(chunk)
                if response.status != 200 or received != (BLOB_SIZE if method == "GET" else 0):
                    raise RuntimeError(f"{method} {url}: {response.status}, {received} bytes")

        await _spread(count, one)

    return batch


def _client_batch(pool: ClientPool, host: str, digest: str) -> Batch:
    client = pool.client(RegistrySettings(host=host))

    async def batch(method: str, count: int) -> None:
        async def head() -> None:
            if await blobs.head(client, REPOSITORY, digest) != BLOB_SIZE:
                raise RuntimeError("HEAD: wrong size")

        async def get() -> None:
            received = 0
            async with blob_reads.open_blob(client, REPOSITORY, digest, BLOB_SIZE) as chunks:
                async for chunk in chunks:
                    received += len(chunk)
            if received != BLOB_SIZE:
                raise RuntimeError(f"GET: {received} bytes")

        await _spread(count, head if method == "HEAD" else get)

    return batch


async def _measure(args: argparse.Namespace, registry: Registry) -> dict[str, Any]:
    import aiohttp

    digest, path = _seed(registry)
    url = registry.url + path
    own = new_transport()
    plain = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=64))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    pool = ClientPool()
    await pool.__aenter__()
    clients: dict[str, Batch] = {
        "own": _httpx_transport_batch(own, url),
        "httpx/httpcore": _httpx_transport_batch(plain, url),
        "aiohttp": _aiohttp_batch(session, url),
        "own + RegistryClient": _client_batch(pool, registry.host, digest),
    }
    samples: dict[str, dict[str, list[float]]] = {
        name: {"HEAD": [], "GET": [], "HEAD_wall": [], "GET_wall": []} for name in clients
    }
    try:
        for batch in clients.values():
            await batch("HEAD", WARMUP)
            await batch("GET", WARMUP // 10)
        names = list(clients)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                for method, count in (("HEAD", args.heads), ("GET", args.gets)):
                    cpu, wall = time.process_time(), time.monotonic()
                    await clients[name](method, count)
                    samples[name][method].append((time.process_time() - cpu) / count * 1e6)
                    samples[name][f"{method}_wall"].append((time.monotonic() - wall) / count * 1e6)
            print(f"round {round_ + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})")
    finally:
        await session.close()
        await own.aclose()
        await plain.aclose()
        await pool.__aexit__(None, None, None)
    return {
        name: {key: round(statistics.median(values), 1) for key, values in found.items()}
        | {"HEAD_all": [round(v, 1) for v in found["HEAD"]]}
        | {"GET_all": [round(v, 1) for v in found["GET"]]}
        for name, found in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=2000, help="HEADs per client per round")
    parser.add_argument("--gets", type=int, default=200, help="1 MiB GETs per client per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    registry = Registry()
    load_before = os.getloadavg()[0]
    try:
        results = asyncio.run(_measure(args, registry))
    finally:
        registry.cleanup()
    own = results["own"]
    print(f"\nmedian of {args.rounds} interleaved rounds, µs of this process's CPU per request")
    print(f"(load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end)")
    header = f"{'client':<22} {'HEAD µs':>8} {'x own':>6} {'1 MiB GET µs':>13} {'x own':>6}"
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        print(
            f"{name:<22} {row['HEAD']:>8.0f} {row['HEAD'] / own['HEAD']:>6.2f} "
            f"{row['GET']:>13.0f} {row['GET'] / own['GET']:>6.2f}"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    output = RESULTS_DIR / f"transport-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.write_text(
        json.dumps(
            {
                "heads": args.heads,
                "gets": args.gets,
                "rounds": args.rounds,
                "concurrency": CONCURRENCY,
                "load_before": load_before,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
