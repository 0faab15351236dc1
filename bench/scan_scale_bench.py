"""Peak memory of a scan over one repository of N generated tags, to its end, three ways.

    python -m bench.scan_scale_bench --tags 1000000 [--runs dry,real,reconcile]

The source and the destination are tests/support/generated_tags.py servers (each a process of
its own: tag lists computed per page, every HEAD answered at once):
- `dry`: `backfill --dry-run`, the destination holding none of the tags (a copy planned and
  printed for each);
- `real`: `backfill` (not dry), the destination holding every tag with the source's digest: the
  fair case for a million tags (copying a million images is not a scan's cost), which runs the
  real path — HEADs, the journal's rows of each page, nothing to journal — to its end;
- `copy`: `backfill` (not dry), the destination holding none of the tags and taking every copy
  (tests/support/generated_tags.py `--accepts`: it forgets each at once): a job journalled, run
  and reported for every tag, followed in the run's bounded window (scan/run_jobs.py);
- `reconcile`: the daemon (`replicator run`, a mosquitto for its broker) with `[reconcile]
  interval = 2`, until its first `reconcile_pass` is logged, the destination holding every tag.
Each run's peak RSS (VmHWM, read from /proc every 50 ms) and its time are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.daemon import replicator_command
from tests.support.generated_tags import GeneratedTagsProcess
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.one_way import one_way_config, sqlite_settings
from tests.support.ports import free_port
from tests.support.process_memory import peak_rss_kib

KIB = 1024
# How often the peak RSS is read.
SAMPLE_SECONDS = 0.05
# A run gives up after this (a million tags takes hours on a loaded 2-core machine).
DEFAULT_LIMIT_SECONDS = 6 * 3600.0
# The daemon's first reconcile pass starts this long after it does.
RECONCILE_INTERVAL = 2.0


def _config(folder: Path, source: str, destination: str, broker_port: int) -> Path:
    settings = sqlite_settings(folder, broker_port, client_id=f"scan-scale-{folder.name}")
    config = one_way_config(folder, settings, source, destination)
    with config.open("a") as file:
        file.write(f"\n[reconcile]\ninterval = {RECONCILE_INTERVAL}\n")
    return config


def _watch(process: subprocess.Popen[Any], done: Any, limit: float) -> tuple[int, float]:
    """Sample `process`'s peak RSS until it exits or `done()`; (peak KiB, seconds)."""
    started, peak = time.monotonic(), 0
    while process.poll() is None and not done() and time.monotonic() - started < limit:
        peak = max(peak, peak_rss_kib(process.pid))
        time.sleep(SAMPLE_SECONDS)
    return peak, time.monotonic() - started


def run(kind: str, tags: int, folder: Path, limit: float) -> dict[str, Any]:
    """One run of `kind`; its figures."""
    folder.mkdir(parents=True, exist_ok=True)
    source = GeneratedTagsProcess(tags, holds=True)
    destination = GeneratedTagsProcess(
        tags, holds=kind not in ("dry", "copy"), accepts=kind == "copy"
    )
    broker: Mosquitto | None = None
    try:
        if kind == "reconcile":
            (folder / "broker").mkdir(exist_ok=True)
            broker = Mosquitto(folder / "broker")
        config = _config(
            folder, source.url, destination.url, broker.port if broker else free_port()
        )
        log = folder / f"{kind}.log"
        if kind == "reconcile":
            command = replicator_command("--config", str(config), "run")
        else:
            command = replicator_command(
                "--config", str(config), "backfill", *(["--dry-run"] if kind == "dry" else [])
            )
        with log.open("w") as err, (folder / f"{kind}.out").open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
            try:
                peak, seconds = _watch(
                    process,
                    lambda: kind == "reconcile" and "reconcile_pass" in log.read_text(),
                    limit,
                )
            finally:
                if process.poll() is None:
                    process.terminate()
                    process.wait(30)
        finished = kind == "reconcile" and "reconcile_pass" in log.read_text()
        finished = finished or (kind != "reconcile" and process.returncode == 0)
        return {
            "run": kind,
            "tags": tags,
            "finished": finished,
            "peak_rss_mib": round(peak / KIB, 1),
            "seconds": round(seconds, 1),
            "source_requests": source.stats()["served"],
            "copies": destination.stats()["puts"],
        }
    finally:
        source.stop()
        destination.stop()
        if broker is not None:
            broker.stop()


def main() -> None:
    """Run the chosen kinds at --tags and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tags", type=int, default=100_000)
    parser.add_argument("--runs", default="dry,real,reconcile")
    parser.add_argument("--limit", type=float, default=DEFAULT_LIMIT_SECONDS)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="scan-scale-"))
    for kind in args.runs.split(","):
        print(json.dumps(run(kind, args.tags, base / kind, args.limit)), flush=True)


if __name__ == "__main__":
    main()
