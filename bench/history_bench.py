"""The history checker over many seeds: seeded schedules of pushes, re-pushes, restores, deletes,
reconcile passes, daemon kills, destination outages, broker restarts and wipes of a registry
that owns no tag, against real docker-registry, mosquitto, the bridge and one daemon, one-way
(A -> B) and active-active (A <-> B), each judged against the invariant
(tests/support/history.py). `--broker-restarts 0 --wipes 0` leaves those two faults out.

    .venv/bin/python bench/history_bench.py --seeds 200 [--first 1] [--length 16] [--tags 3]
        [--topologies one-way,active-active] [--stack-every 20] [--out FILE]
        [--broker-restarts 1] [--wipes 1] [--members 1] [--journal sqlite|postgresql]
        [--keep DIR]

Seeds alternate between the topologies; each topology's stack (registries, broker, bridge,
daemon) is started afresh every `--stack-every` of its seeds, so reconcile's scans stay small.
Prints one line per seed and, at the end, one JSON summary: schedules, steps and writes per
schedule, violations, anomalies, times to replication (p50/p95/max); every failing seed's
schedule, writes and violations go to the --out file's `failures` (and to stdout). Exit 1 when
any schedule broke the invariant. `--members 2` runs two daemons of one fleet (one SQLite
journal, one shared subscription) on the same schedule, its kills hitting them in turn.
`--journal postgresql` puts each stack's journal in a database of its own on a PostgreSQL
cluster started for the run (tests/support/journal_fixtures.running_postgres), as a fleet
across hosts would have it; SQLite files by default. `--keep DIR` saves, for each failing
seed, its stack's logs (daemons, bridge, broker, reconcile passes) and its journal (the SQLite
file, or every job and event as JSON) under DIR/<topology>-<seed>/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.active_active import Pair
from tests.support.history import Odds, summary
from tests.support.history_run import Run, check, describe, start
from tests.support.journal_fixtures import running_postgres
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.registry_server import Registry

# Longer than the suite's seeds (8 steps): more writes per tag, more faults in one schedule.
DEFAULT_LENGTH = 16
DEFAULT_TAGS = 3
# A fresh stack every this many seeds of a topology: reconcile scans every repository, and a
# few hundred of them would slow each pass down over a long run.
DEFAULT_STACK_EVERY = 20


class Stack:
    """One topology's registries, broker, bridge and daemon, in a folder of their own."""

    def __init__(self, topology: str, members: int = 1, journal_url: str | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=f"history-{topology}-"))
        self.registries: list[Registry] = []
        (self.folder / "broker").mkdir()
        self.broker = Mosquitto(self.folder / "broker")
        self.pair: Pair = start(
            topology, self.folder / "pair", self.broker, self._registry, members=members,
            journal_url=journal_url,
        )  # fmt: skip

    def _registry(self, url: str | None) -> Registry:
        registry = Registry(notifications_url=url)
        self.registries.append(registry)
        return registry

    def close(self) -> None:
        """Stop everything and delete the folder."""
        self.pair.stop()
        for registry in self.registries:
            registry.cleanup()
        self.broker.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def journals(kind: str) -> Iterator[Callable[[], str | None]]:
    """Makes each stack's journal: None (a SQLite file in its folder), or a fresh database of a
    PostgreSQL cluster running until the block ends."""
    if kind == "sqlite":
        yield lambda: None
        return
    with running_postgres() as server:
        yield server.create_database


def keep(stack: Stack, folder: Path) -> None:
    """Save a failing seed's logs and journal in `folder` (see --keep)."""
    folder.mkdir(parents=True, exist_ok=True)
    for log in stack.folder.rglob("*.log"):
        shutil.copy(log, folder / f"{log.parent.name}-{log.name}")
    journal = stack.pair.journal
    if journal.url.startswith("sqlite:///"):
        # The backup API: the file alone misses what its write-ahead log still holds.
        with (
            closing(sqlite3.connect(journal.url.removeprefix("sqlite:///"))) as source,
            closing(sqlite3.connect(folder / "journal.db")) as copy,
        ):
            source.backup(copy)
        return
    rows = {
        "jobs": [dataclasses.asdict(job) for job in journal.jobs()],
        "events": [
            {**dataclasses.asdict(event), "payload": event.payload.decode(errors="replace")}
            for event in journal.events()
        ],
    }
    (folder / "journal.json").write_text(json.dumps(rows, indent=1, default=str))


def main() -> int:
    """Run the seeds; print each, then the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--length", type=int, default=DEFAULT_LENGTH)
    parser.add_argument("--tags", type=int, default=DEFAULT_TAGS)
    parser.add_argument("--topologies", default="one-way,active-active")
    parser.add_argument("--stack-every", type=int, default=DEFAULT_STACK_EVERY)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--broker-restarts", type=int, default=1, help="weight (0: none)")
    parser.add_argument("--wipes", type=int, default=1, help="weight of destination wipes")
    parser.add_argument(
        "--members", type=int, default=1, help="daemons of one fleet on the pair's journal"
    )
    parser.add_argument("--journal", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--keep", type=Path, help="save failing seeds' logs and journal here")
    args = parser.parse_args()
    topologies = args.topologies.split(",")
    odds = Odds(broker=args.broker_restarts, wipe=args.wipes)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    stacks: dict[str, Stack] = {}
    used: dict[str, int] = dict.fromkeys(topologies, 0)
    runs: list[Run] = []
    harness_errors: list[str] = []
    started = time.monotonic()
    cluster = ExitStack()
    new_journal = cluster.enter_context(journals(args.journal))
    try:
        for seed in range(args.first, args.first + args.seeds):
            topology = topologies[seed % len(topologies)]
            if used[topology] % args.stack_every == 0:
                if topology in stacks:
                    stacks.pop(topology).close()
                stacks[topology] = Stack(topology, args.members, new_journal())
            used[topology] += 1
            try:
                run = check(
                    stacks[topology].pair, seed, topology=topology, length=args.length,
                    tags=args.tags, odds=odds, broker=stacks[topology].broker,
                )  # fmt: skip
            except Exception:
                # A registry or daemon of the harness that did not come back (a loaded machine):
                # the seed is counted as such, and its topology gets a fresh stack.
                failure = traceback.format_exc()
                print(f"seed {seed} {topology}: harness error\n{failure}", flush=True)
                harness_errors.append(f"{topology}:{seed}")
                stacks.pop(topology).close()
                used[topology] = 0
                continue
            runs.append(run)
            print(
                f"seed {seed} {topology}: {len(run.steps)} steps, {len(run.history)} writes,"
                f" {len(run.verdict.violations)} violations, anomalies {run.anomalies},"
                f" {run.seconds:.1f}s",
                flush=True,
            )
            if run.verdict.violations:
                print(describe(run), flush=True)
                if args.keep:
                    keep(stacks[topology], args.keep / f"{topology}-{seed}")
            if args.out:
                figures = report(runs, time.monotonic() - started, harness_errors)
                args.out.write_text(json.dumps(figures, indent=2))
    finally:
        for stack in stacks.values():
            stack.close()
        cluster.close()
    result = report(runs, time.monotonic() - started, harness_errors)
    shown = {k: v for k, v in result.items() if k not in ("failures", "latencies")}
    print(json.dumps(shown, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 1 if result["violations"] else 0


def report(runs: list[Run], seconds: float, harness_errors: list[str]) -> dict[str, Any]:
    """The figures of the runs so far (`harness_errors`: seeds the harness failed to run)."""
    latencies = [value for run in runs for value in run.verdict.latencies]
    by_topology = {
        topology: sum(1 for run in runs if run.topology == topology)
        for topology in sorted({run.topology for run in runs})
    }
    return {
        "schedules": len(runs),
        "by_topology": by_topology,
        "steps_per_schedule": statistics.mean(len(r.steps) for r in runs) if runs else 0,
        "writes_per_schedule": statistics.mean(len(r.history) for r in runs) if runs else 0,
        "daemon_kills": sum(1 for r in runs for s in r.steps if s.kind == "kill"),
        "outages": sum(1 for r in runs for s in r.steps if s.kind == "outage"),
        "broker_restarts": sum(1 for r in runs for s in r.steps if s.kind == "broker"),
        "wipes": sum(1 for r in runs for s in r.steps if s.kind == "wipe"),
        "reconcile_passes_cli": sum(1 for r in runs for s in r.steps if s.kind == "reconcile"),
        "violations": sum(len(r.verdict.violations) for r in runs),
        "failing_seeds": [f"{r.topology}:{r.seed}" for r in runs if r.verdict.violations],
        "harness_errors": harness_errors,
        "anomalies": [f"{r.topology}:{r.seed}: {a}" for r in runs for a in r.anomalies],
        "pushes_replicated": len(latencies),
        "pushes_overtaken": sum(r.verdict.overtaken for r in runs),
        "time_to_replication_seconds": summary(latencies),
        "seconds": round(seconds, 1),
        "failures": [describe(r) for r in runs if r.verdict.violations],
        "latencies": [round(value, 3) for value in latencies],
    }


if __name__ == "__main__":
    sys.exit(main())
