"""Benchmark `replicator copy -r` against `skopeo sync`, on loopback and with added latency.

    .venv/bin/python bench/copy_bench.py [--quick] [--delay-ms 25] [--big-mib 1024]

One run: build the corpus (bench/corpus.py), push it once to a source docker-registry, then
(a) loopback: replicator into DST1, skopeo sync into DST2; (b) the same through a delaying TCP
relay (bench/delay_proxy.py) in front of each fresh destination; (c) peak RSS of replicator
copying one image with a single big blob. Every destination is verified (all digests equal)
before a figure is reported. Prints a table; writes bench/results/copy-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import FULL, MIB, QUICK, Corpus, build_corpus, push_corpus, verify_copy
from bench.delay_proxy import DelayProxy
from bench.runners import RunResult, compile_project, replicator_copy, skopeo_sync
from tests.support import skopeo
from tests.support.images import big_blob_layout
from tests.support.registry_server import Registry

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Targets of issue 2, printed beside the measured figures.
TARGET_LOOPBACK_RATIO = 1.3
TARGET_LATENCY_RATIO = 4.0
TARGET_PEAK_RSS_MIB = 150


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    scenario: str
    tool: str
    seconds: float
    mb_per_second: float
    peak_rss_mib: float
    exit_code: int
    verified: bool
    problems: list[str]


def _row(scenario: str, result: RunResult, moved_bytes: int, problems: list[str]) -> Row:
    if not result.ok:
        problems = [f"exit {result.exit_code}: {result.stderr.strip()[-800:]}", *problems]
    return Row(
        scenario=scenario,
        tool=result.tool,
        seconds=round(result.seconds, 3),
        mb_per_second=round(moved_bytes / 1e6 / result.seconds, 1) if result.seconds else 0.0,
        peak_rss_mib=round(result.peak_rss_bytes / MIB, 1),
        exit_code=result.exit_code,
        verified=result.ok and not problems,
        problems=problems[:10],
    )


def _compare(
    scenario: str, corpus: Corpus, source: Registry, delay: float, workdir: Path
) -> list[Row]:
    """replicator and skopeo sync, each into a fresh destination (behind a relay if delay)."""
    rows = []
    destinations = [Registry(), Registry()]
    relays = [DelayProxy("127.0.0.1", d.port, delay=delay).start() for d in destinations]
    hosts = [relay.host for relay in relays] if delay else [d.host for d in destinations]
    try:
        prefix = corpus.shape.prefix
        print(f"[{scenario}] replicator copy -r ...", flush=True)
        result = replicator_copy(f"{source.host}/{prefix}", f"{hosts[0]}/{prefix}")
        problems = verify_copy(corpus, destinations[0].url)
        rows.append(_row(scenario, result, corpus.unique_bytes, problems))
        print(f"[{scenario}] skopeo sync ...", flush=True)
        result = skopeo_sync(source.host, corpus.repositories, f"{hosts[1]}/{prefix}", workdir)
        problems = verify_copy(corpus, destinations[1].url)
        rows.append(_row(scenario, result, corpus.unique_bytes, problems))
    finally:
        for relay in relays:
            relay.stop()
        for destination in destinations:
            destination.cleanup()
    return rows


def _big_blob(source: Registry, size: int, workdir: Path) -> Row:
    """Peak RSS of replicator copying one image whose only layer is `size` bytes."""
    print(f"[big-blob] building and pushing a {size // MIB} MiB blob ...", flush=True)
    image = big_blob_layout(workdir / "big-layout", "big", size)
    skopeo.push_layout(workdir / "big-layout", "big", f"{source.host}/big/blob:v1", timeout=900)
    shutil.rmtree(workdir / "big-layout")
    destination = Registry()
    try:
        print("[big-blob] replicator copy ...", flush=True)
        result = replicator_copy(
            f"{source.host}/big/blob:v1", f"{destination.host}/big/blob:v1", recursive=False
        )
        served = skopeo.digest_of(f"{destination.host}/big/blob:v1") if result.ok else None
        problems = [] if served == image.digest else [f"digest at destination: {served}"]
        return _row(f"big-blob {size // MIB} MiB", result, size, problems)
    finally:
        destination.cleanup()


def _print_table(rows: list[Row], ratios: dict[str, float | None], unique_mb: float) -> None:
    print(f"\ncorpus: {unique_mb:.0f} MB of distinct blobs")
    header = f"{'scenario':<22} {'tool':<16} {'seconds':>9} {'MB/s':>8} {'RSS MiB':>8}  ok"
    print(header)
    print("-" * len(header))
    for row in rows:
        ok = "yes" if row.verified else "NO: " + "; ".join(row.problems)[:200]
        print(
            f"{row.scenario:<22} {row.tool:<16} {row.seconds:>9.2f} {row.mb_per_second:>8.1f} "
            f"{row.peak_rss_mib:>8.1f}  {ok}"
        )
    print()
    targets = {"loopback": TARGET_LOOPBACK_RATIO, "latency": TARGET_LATENCY_RATIO}
    for scenario, ratio in ratios.items():
        shown = f"{ratio:.2f}x" if ratio is not None else "n/a (a run failed verification)"
        print(f"skopeo/replicator time, {scenario}: {shown} (target >= {targets[scenario]}x)")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if any destination failed verification."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus for a smoke run")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way latency (ms)")
    parser.add_argument("--big-mib", type=int, default=None, help="big blob size (MiB)")
    args = parser.parse_args(argv)
    compile_project()
    shape = QUICK if args.quick else FULL
    big_size = (args.big_mib or (64 if args.quick else 1024)) * MIB
    workdir = Path(tempfile.mkdtemp(prefix="replicator-bench-"))
    source = None
    try:
        started = time.monotonic()
        corpus = build_corpus(shape, workdir)
        print(
            f"corpus built: {len(corpus.images)} images, "
            f"{corpus.unique_bytes / 1e6:.0f} MB ({time.monotonic() - started:.1f}s)",
            flush=True,
        )
        source = Registry()
        started = time.monotonic()
        push_corpus(corpus, source.host)
        print(f"corpus pushed to {source.host} ({time.monotonic() - started:.1f}s)", flush=True)
        rows = _compare("loopback", corpus, source, 0.0, workdir)
        rows += _compare("latency", corpus, source, args.delay_ms / 1000, workdir)
        rows.append(_big_blob(source, big_size, workdir))
        ratios: dict[str, float | None] = {}
        for scenario in ("loopback", "latency"):
            pair = [row for row in rows if row.scenario == scenario]
            ok = all(row.verified for row in pair)
            ratios[scenario] = round(pair[1].seconds / pair[0].seconds, 2) if ok else None
        _print_table(rows, ratios, corpus.unique_bytes / 1e6)
        big = rows[-1]
        print(
            f"peak RSS, {big.scenario}: {big.peak_rss_mib:.0f} MiB "
            f"(target < {TARGET_PEAK_RSS_MIB} MiB)"
        )
        RESULTS_DIR.mkdir(exist_ok=True)
        output = RESULTS_DIR / f"copy-{time.strftime('%Y%m%dT%H%M%S')}.json"
        output.write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "delay_ms": args.delay_ms,
                    "corpus": asdict(shape),
                    "unique_bytes": corpus.unique_bytes,
                    "rows": [asdict(row) for row in rows],
                    "ratios_skopeo_over_replicator": ratios,
                },
                indent=2,
            )
        )
        print(f"results: {output}")
        return 0 if all(row.verified for row in rows) else 1
    finally:
        if source is not None:
            source.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
