"""One large layer over a link that drops every N MiB: replicator vs skopeo; and the bandwidth
limit's accuracy.

    .venv/bin/python bench/long_link_bench.py [--size-mib 1024] [--cut-mib 64] [--limit-mib 8]

A one-layer image of `--size-mib` is pushed to a source docker-registry. The link is a TCP proxy
resetting each connection after `--cut-mib` (tests/support/cutting_proxy.py), counting the bytes
it forwards. (a) download: the proxy in front of the source; (b) upload: in front of a
destination that reports what a broken upload holds (tests/support/resuming_uploads.py in front
of docker-registry, which cannot resume an upload itself). Each tool copies into a fresh
destination: `replicator copy`, and `skopeo copy --retry-times 5`. (c) `replicator copy
--max-bandwidth` of an image sized to take `--limit-seconds` at the limit, through the proxy not
cutting: the rate over the middle 80% of the bytes. Peak RSS of each run is reported.
Every copy that finishes is checked (the destination serves the source's manifest digest).
Prints a table; writes bench/results/long-link-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.runners import RunResult, compile_project, timed_run
from tests.support import skopeo
from tests.support.cutting_proxy import CuttingProxy
from tests.support.images import big_blob_layout
from tests.support.registry_server import Registry
from tests.support.resuming_uploads import ResumingUploads

MIB = 1024 * 1024
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# skopeo's retries per copy: as the issue tried it.
SKOPEO_RETRIES = 5
# The rate of (c) is taken while the bytes upstream go from 10% to 90% of the total.
STEADY_FROM, STEADY_TO = 0.1, 0.9
IMAGE = "big/blob:v1"
LIMITED = "limited/blob:v1"


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    scenario: str
    tool: str
    finished: bool
    seconds: float
    wire_bytes: int
    wire_factor: float
    cuts: int
    peak_rss_mib: float
    note: str


def _skopeo_copy(source: str, destination: str) -> RunResult:
    command = [
        "skopeo", "copy", "--retry-times", str(SKOPEO_RETRIES), "--preserve-digests",
        "--src-tls-verify=false", "--dest-tls-verify=false",
        f"docker://{source}", f"docker://{destination}",
    ]  # fmt: skip
    return timed_run("skopeo copy", command)


def _replicator_copy(source: str, destination: str, *extra: str) -> RunResult:
    command = [sys.executable, "-m", "replicator", "copy", source, destination, "--json", *extra]
    return timed_run("replicator copy", command)


Copy = Callable[[str, str], RunResult]
TOOLS: dict[str, Copy] = {"replicator": _replicator_copy, "skopeo": _skopeo_copy}


@contextmanager
def _started(proxy: CuttingProxy) -> Iterator[CuttingProxy]:
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _check(
    result: RunResult, destination: Registry, digest: str, image: str = IMAGE
) -> tuple[bool, str]:
    if not result.ok:
        return False, (result.stderr.strip().splitlines() or [""])[-1][:160]
    served = skopeo.digest_of(f"{destination.host}/{image}")
    return (served == digest, "" if served == digest else f"served {served}")


def _over_the_link(scenario: str, source: Registry, digest: str, size: int, cut: int) -> list[Row]:
    """Each tool's copy into a fresh destination with the link in front of the source
    ("download", bytes counted to the client) or of a destination that resumes ("upload",
    bytes counted upstream)."""
    download = scenario == "download"
    rows = []
    for tool, copy in TOOLS.items():
        destination = Registry()
        front = None if download else ResumingUploads(destination.url)
        if front is not None:
            front.start()
        try:
            with _started(
                CuttingProxy(source.url if front is None else front.url, cut_after=cut)
            ) as proxy:
                print(f"[{scenario}] {tool} ...", flush=True)
                if download:
                    result = copy(f"{proxy.host}/{IMAGE}", f"{destination.host}/{IMAGE}")
                else:
                    result = copy(f"{source.host}/{IMAGE}", f"{proxy.host}/{IMAGE}")
                finished, note = _check(result, destination, digest)
                wire = proxy.bytes_to_client if download else proxy.bytes_to_upstream
                rows.append(Row(scenario, tool, finished, result.seconds, wire, wire / size,
                                proxy.cuts, result.peak_rss_bytes / MIB, note))  # fmt: skip
        finally:
            if front is not None:
                front.stop()
            destination.terminate()
            destination.cleanup()
    return rows


def _bandwidth(source: Registry, digest: str, size: int, limit: int) -> Row:
    destination = Registry()
    try:
        with _started(CuttingProxy(destination.url, cut_after=None)) as proxy:
            print(f"[bandwidth] replicator at {limit / MIB:.0f} MiB/s ...", flush=True)
            result = _replicator_copy(
                f"{source.host}/{LIMITED}", f"{proxy.host}/{LIMITED}", "--max-bandwidth", str(limit)
            )
            finished, note = _check(result, destination, digest, LIMITED)
            rate = proxy.upstream_rate(STEADY_FROM, STEADY_TO)
            note = note or f"{rate / MIB:.2f} MiB/s, {rate / limit:.3f}x the limit"
            wire = proxy.bytes_to_upstream
            return Row("bandwidth", "replicator", finished, result.seconds, wire, wire / size,
                       0, result.peak_rss_bytes / MIB, note)  # fmt: skip
    finally:
        destination.terminate()
        destination.cleanup()


def main() -> int:
    """Run the scenarios, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="the layer's size")
    parser.add_argument("--cut-mib", type=int, default=64, help="bytes per connection")
    parser.add_argument("--limit-mib", type=int, default=8, help="the bandwidth limit, MiB/s")
    parser.add_argument(
        "--limit-seconds", type=int, default=8, help="how long the limited copy should take"
    )
    args = parser.parse_args()
    size, cut, limit = args.size_mib * MIB, args.cut_mib * MIB, args.limit_mib * MIB
    compile_project()
    workdir = Path(tempfile.mkdtemp(prefix="replicator-long-link-"))
    source = Registry()
    try:
        image = big_blob_layout(workdir / "layout", "v1", size)
        skopeo.push_layout(workdir / "layout", "v1", f"{source.host}/{IMAGE}", timeout=900)
        rows = [
            *_over_the_link("download", source, image.digest, size, cut),
            *_over_the_link("upload", source, image.digest, size, cut),
        ]
        limited_size = limit * args.limit_seconds
        limited = big_blob_layout(workdir / "limited", "v1", limited_size, seed=11)
        skopeo.push_layout(workdir / "limited", "v1", f"{source.host}/{LIMITED}", timeout=900)
        rows.append(_bandwidth(source, limited.digest, limited_size, limit))
    finally:
        source.terminate()
        source.cleanup()
    print(f"\n{args.size_mib} MiB layer, link reset every {args.cut_mib} MiB per connection\n")
    print(
        "| scenario | tool | finished | seconds | on the wire | x layer | cuts | peak RSS | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.scenario} | {row.tool} | {'yes' if row.finished else 'no'} | "
              f"{row.seconds:.1f} | {row.wire_bytes / MIB:.0f} MiB | {row.wire_factor:.3f} | "
              f"{row.cuts} | {row.peak_rss_mib:.0f} MiB | {row.note} |")  # fmt: skip
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"long-link-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": [asdict(r) for r in rows]}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
