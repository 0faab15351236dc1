"""Benchmark `replicator backfill` against `skopeo sync`: cold, with latency, no-op, large catalog.

    .venv/bin/python bench/backfill_bench.py [--quick] [--delay-ms 25] [--repositories 2000]

One run: the copy bench's corpus (bench/corpus.py) pushed once to a source docker-registry, then
(a) cold loopback: `replicator backfill` into an empty DST1, skopeo sync into an empty DST2,
`--rounds` times (default 5) interleaved, the ratio taken between the medians;
(b) cold latency: the same into fresh destinations behind bench/delay_proxy.py; (c) no-op:
both run again over (b)'s replicated destinations, still behind the relay; (d) scan-only:
REPOSITORIES x 5 tags of tiny images seeded straight into a source and a destination over
HTTP, then a backfill no-op pass over them on loopback. Every destination is verified before a
figure is reported. Prints a table; writes bench/results/backfill-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import FULL, QUICK, Corpus, build_corpus, push_corpus, verify_copy
from bench.delay_proxy import DelayProxy
from bench.runners import RunResult, compile_project, skopeo_sync, timed_run
from tests.support.registry_server import Registry

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Targets of issue 5, printed beside the measured figures.
TARGETS = {"cold loopback": 1.3, "cold latency": 4.0, "no-op latency": 10.0}
TARGET_SCAN_SECONDS = 30.0
# Issue 16: the no-op scan within this factor of the registries' own floor, same run.
TARGET_SCAN_FLOOR_RATIO = 1.15
SCAN_FLOOR_TOOL = "registry floor"
# Rounds of the scan-only pass and its floor, interleaved (each a few seconds at 2,000 x 5).
SCAN_ROUNDS = 3
# Tags per repository of the large catalog (the 2,000 x 5).
SCAN_TAGS = 5
# Requests in flight while seeding the large catalog: keeps the registry busy on 2 cores.
SEED_CONCURRENCY = 16
# Cold loopback runs take seconds and vary by 20% from run to run on a shared 2-core machine
# (per-round ratios of one run: 1.08x to 1.50x): its ratio is the median of this many
# interleaved rounds. The latency runs (minutes) run once.
ROUNDS = 5
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCOUNT = "111122223333"


@dataclass(frozen=True)
class Row:
    """One timed run."""

    scenario: str
    tool: str
    seconds: float
    exit_code: int
    verified: bool
    problems: list[str]


def write_config(workdir: Path, name: str, source_url: str, dest_url: str, prefix: str) -> Path:
    """A config replicating `prefix` from `source_url` to `dest_url` (same account), with its
    own journal."""
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    rules = {
        "rules": [
            {
                "destinations": [{"region": "us-west-2", "registryId": ACCOUNT}],
                "repositoryFilters": [{"filter": prefix, "filterType": "PREFIX_MATCH"}],
            }
        ]
    }
    (folder / "replication.json").write_text(json.dumps(rules))
    config = folder / "replicator.toml"
    config.write_text(
        f'version = 1\n[journal]\nurl = "sqlite:///{folder / "journal.db"}"\n'
        "[workers]\nconcurrency = 16\nper_registry = 8\n"
        f'[registries.src]\naccount = "{ACCOUNT}"\nregion = "us-east-1"\nurl = "{source_url}"\n'
        'replication = "replication.json"\n'
        f'[registries.dst]\naccount = "{ACCOUNT}"\nregion = "us-west-2"\nurl = "{dest_url}"\n'
    )
    return config


def backfill(config: Path) -> RunResult:
    """`replicator backfill --json` as one timed process."""
    command = [sys.executable, "-m", "replicator", "backfill", "--config", str(config), "--json"]
    return timed_run("replicator backfill", command)


def row(scenario: str, result: RunResult, problems: list[str]) -> Row:
    """A table row; a failed run or a wrong destination is not verified."""
    if not result.ok:
        problems = [f"exit {result.exit_code}: {result.stderr[-300:]}", *problems]
    return Row(scenario, result.tool, round(result.seconds, 3), result.exit_code,
               result.ok and not problems, problems[:10])  # fmt: skip


def compare(
    corpus: Corpus, source: Registry, delay: float, workdir: Path, *, rounds: int = 1
) -> list[Row]:
    """Cold backfill vs skopeo sync into fresh destinations, `rounds` times interleaved; with
    latency, also the no-op pass."""
    rows = []
    for number in range(1, rounds + 1):
        rows += _compare_once(corpus, source, delay, workdir / f"round-{number}")
    return rows


def _compare_once(corpus: Corpus, source: Registry, delay: float, workdir: Path) -> list[Row]:
    label = "latency" if delay else "loopback"
    destinations = [Registry(), Registry()]
    relays = [DelayProxy("127.0.0.1", d.port, delay=delay).start() for d in destinations]
    hosts = [r.host for r in relays] if delay else [d.host for d in destinations]
    prefix = corpus.shape.prefix
    config = write_config(workdir, f"cold-{label}", source.url, f"http://{hosts[0]}", prefix)
    rows = []
    try:
        passes = ("cold", "no-op") if delay else ("cold",)
        for name in passes:
            print(f"[{name} {label}] replicator backfill ...", flush=True)
            result = backfill(config)
            rows.append(row(f"{name} {label}", result, verify_copy(corpus, destinations[0].url)))
            print(f"[{name} {label}] skopeo sync ...", flush=True)
            result = skopeo_sync(source.host, corpus.repositories, f"{hosts[1]}/{prefix}", workdir)
            rows.append(row(f"{name} {label}", result, verify_copy(corpus, destinations[1].url)))
    finally:
        for relay in relays:
            relay.stop()
        for destination in destinations:
            destination.cleanup()
    return rows


async def seed_catalog(registries: list[Registry], repositories: int) -> dict[str, str]:
    """Write `repositories` x SCAN_TAGS tiny images into each registry over HTTP: one layer and
    one config uploaded once, mounted everywhere else; each tag its own manifest (an annotation
    differs). Returns repository:tag -> digest."""
    layer, config = b"tiny layer", b'{"architecture":"amd64","os":"linux"}'
    blobs = {f"sha256:{hashlib.sha256(b).hexdigest()}": b for b in (layer, config)}
    (layer_digest, config_digest) = list(blobs)
    expected: dict[str, str] = {}
    for registry in registries:
        async with httpx.AsyncClient(base_url=registry.url, timeout=60) as client:
            limit = asyncio.Semaphore(SEED_CONCURRENCY)

            async def one(
                number: int,
                client: httpx.AsyncClient = client,
                limit: asyncio.Semaphore = limit,
            ) -> None:
                repository = f"scan/r{number:05d}"
                async with limit:
                    for digest, body in blobs.items():
                        if number == 0:
                            start = await client.post(f"/v2/{repository}/blobs/uploads/")
                            location = start.headers["location"]
                            joiner = "&" if "?" in location else "?"
                            put = await client.put(
                                f"{location}{joiner}digest={digest}", content=body
                            )
                            assert put.status_code == 201, put.text
                        else:
                            mount = await client.post(
                                f"/v2/{repository}/blobs/uploads/",
                                params={"mount": digest, "from": "scan/r00000"},
                            )
                            assert mount.status_code == 201, mount.text
                    for tag_number in range(SCAN_TAGS):
                        manifest = json.dumps({
                            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                       "digest": config_digest, "size": len(config)},
                            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                        "digest": layer_digest, "size": len(layer)}],
                            "annotations": {"tag": f"{repository}:{tag_number}"},
                        }).encode()  # fmt: skip
                        tag = f"t{tag_number}"
                        put = await client.put(
                            f"/v2/{repository}/manifests/{tag}",
                            content=manifest,
                            headers={"Content-Type": OCI_MANIFEST},
                        )
                        assert put.status_code == 201, put.text
                        expected[f"{repository}:{tag}"] = put.headers["docker-content-digest"]

            await one(0)
            await asyncio.gather(*(one(n) for n in range(1, repositories)))
    return expected


def scan_only(repositories: int, workdir: Path, rounds: int) -> list[Row]:
    """The no-op pass over a large catalog already replicated, on loopback, and the registries'
    own floor for it (bench/scan_floor.py: a plain client sending the same requests), `rounds`
    times interleaved."""
    source, destination = Registry(), Registry()
    scenario = f"scan-only {repositories}x{SCAN_TAGS}"
    try:
        started = time.monotonic()
        print(f"[scan-only] seeding {repositories} x {SCAN_TAGS} tiny images ...", flush=True)
        expected = asyncio.run(seed_catalog([source, destination], repositories))
        print(f"[scan-only] seeded ({time.monotonic() - started:.1f}s)", flush=True)
        config = write_config(workdir, "scan", source.url, destination.url, "scan")
        rows = []

        def ours() -> Row:
            print("[scan-only] replicator backfill (no-op pass) ...", flush=True)
            result = backfill(config)
            summary = result.summary()
            problems = []
            if summary.get("up_to_date") != len(expected) or summary.get("jobs") != 0:
                problems.append(
                    f"expected {len(expected)} up to date and 0 jobs, got "
                    f"{summary.get('up_to_date')} and {summary.get('jobs')}"
                )
            return row(scenario, result, problems)

        def floor() -> Row:
            print("[scan-only] registry floor (plain client, same requests) ...", flush=True)
            command = [sys.executable, "-m", "bench.scan_floor", source.url, destination.url]
            result = timed_run(SCAN_FLOOR_TOOL, [*command, "scan/"])
            equal = result.summary().get("equal")
            problems = [] if equal == len(expected) else [f"{equal} of {len(expected)} equal"]
            return row(scenario, result, problems)

        for number in range(rounds):
            rows += [run() for run in ((ours, floor) if number % 2 == 0 else (floor, ours))]
        return rows
    finally:
        source.cleanup()
        destination.cleanup()


def scan_ratio(rows: list[Row]) -> dict[str, float | None]:
    """The no-op scan's median seconds, the floor's, and their ratio (None when a run failed)."""
    scan = [r for r in rows if r.scenario.startswith("scan-only")]
    ours = [r.seconds for r in scan if r.tool == "replicator backfill"]
    floor = [r.seconds for r in scan if r.tool == SCAN_FLOOR_TOOL]
    if not ours or not floor or not all(r.verified for r in scan):
        return {"scan_seconds": None, "floor_seconds": None, "scan_over_floor": None}
    median_ours, median_floor = statistics.median(ours), statistics.median(floor)
    return {
        "scan_seconds": median_ours,
        "floor_seconds": median_floor,
        "scan_over_floor": round(median_ours / median_floor, 2),
    }


def ratios(rows: list[Row]) -> dict[str, float | None]:
    """skopeo seconds / replicator seconds per scenario, medians over its rounds (None when a
    run failed)."""
    found: dict[str, float | None] = {}
    for scenario in TARGETS:
        runs = [r for r in rows if r.scenario == scenario]
        ours = [r.seconds for r in runs if r.tool == "replicator backfill"]
        theirs = [r.seconds for r in runs if r.tool != "replicator backfill"]
        if ours and theirs:
            ok = all(r.verified for r in runs)
            ratio = statistics.median(theirs) / statistics.median(ours)
            found[scenario] = round(ratio, 2) if ok else None
    return found


def print_table(rows: list[Row], found: dict[str, float | None]) -> None:
    """The figures, then the ratios beside their targets."""
    header = f"{'scenario':<24} {'tool':<20} {'seconds':>9}  ok"
    print(f"\n{header}\n{'-' * len(header)}")
    for r in rows:
        ok = "yes" if r.verified else "NO: " + "; ".join(r.problems)[:200]
        print(f"{r.scenario:<24} {r.tool:<20} {r.seconds:>9.2f}  {ok}")
    print()
    for scenario, ratio in found.items():
        shown = f"{ratio:.2f}x" if ratio is not None else "n/a (a run failed verification)"
        rounds = sum(1 for r in rows if r.scenario == scenario) // 2
        median = f", median of {rounds} interleaved rounds" if rounds > 1 else ""
        print(
            f"skopeo/replicator time, {scenario}: {shown} (target >= {TARGETS[scenario]}x{median})"
        )
    scan = scan_ratio(rows)
    if scan["scan_over_floor"] is not None:
        print(
            f"scan-only no-op: {scan['scan_seconds']:.1f} s (median; target < "
            f"{TARGET_SCAN_SECONDS:.0f} s), registry floor {scan['floor_seconds']:.1f} s: "
            f"{scan['scan_over_floor']:.2f}x the floor (target <= {TARGET_SCAN_FLOOR_RATIO}x)"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if any destination failed verification."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus for a smoke run")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way latency (ms)")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"cold loopback rounds (default {ROUNDS})"
    )
    parser.add_argument(
        "--repositories", type=int, default=None, help="scan-only catalog size (default 2000)"
    )
    parser.add_argument("--scan-rounds", type=int, default=SCAN_ROUNDS)
    parser.add_argument(
        "--scenarios", default="cold,scan", help="comma-separated: cold (a-c), scan (d)"
    )
    args = parser.parse_args(argv)
    compile_project()
    shape = QUICK if args.quick else FULL
    repositories = args.repositories or (200 if args.quick else 2000)
    workdir = Path(tempfile.mkdtemp(prefix="replicator-backfill-bench-"))
    source = None
    try:
        scenarios = set(args.scenarios.split(","))
        rows: list[Row] = []
        if "cold" in scenarios:
            corpus = build_corpus(shape, workdir)
            source = Registry()
            push_corpus(corpus, source.host)
            print(
                f"corpus: {len(corpus.images)} images, {corpus.unique_bytes / 1e6:.0f} MB",
                flush=True,
            )
            rows += compare(corpus, source, 0.0, workdir, rounds=args.rounds)
            rows += compare(corpus, source, args.delay_ms / 1000, workdir)
        if "scan" in scenarios:
            rows += scan_only(repositories, workdir, args.scan_rounds)
        found = ratios(rows)
        print_table(rows, found)
        RESULTS_DIR.mkdir(exist_ok=True)
        output = RESULTS_DIR / f"backfill-{time.strftime('%Y%m%dT%H%M%S')}.json"
        output.write_text(json.dumps({
            "quick": args.quick, "delay_ms": args.delay_ms, "corpus": asdict(shape),
            "scan_repositories": repositories, "scan_tags": SCAN_TAGS,
            "rows": [asdict(r) for r in rows], "ratios_skopeo_over_replicator": found,
            "scan": scan_ratio(rows),
        }, indent=2))  # fmt: skip
        print(f"results: {output}")
        return 0 if all(r.verified for r in rows) else 1
    finally:
        if source is not None:
            source.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
