"""The journal alone, on SQLite and PostgreSQL: throughput with concurrent claimers, and latency
with many finished jobs in the table.

    .venv/bin/python bench/journal_bench.py [--pushes 2000] [--claimers 1,4,16,64]
        [--finished 10000,1000000] [--backends sqlite,postgresql]

(`--finished ""` skips the latency part.) 64 claimer processes stand for a fleet's members
claiming at once (100 daemons at 1,000 pushes/s, README "How big a fleet"); on a small machine
read the trend across claimer counts, not the absolute figure.

Per backend (SQLite: a file; PostgreSQL: a throw-away cluster started here, fsync off as in the
tests, so the figures are the journal's and the server's CPU, not a disk's):

1. **throughput**, per claimer count: a fresh database; one process records `--pushes` events
   of two jobs each (one push, two destinations: `record_event`, as the daemon does) — pushes/s;
   then N claimer processes (started and connected first, released together) claim
   `CLAIM_BATCH` due jobs at a time and complete each, until none is left — jobs claimed and
   completed per second. Every job must end COMPLETE exactly once (checked).
2. **latency**, per table size: `--finished` COMPLETE jobs generated in the database itself
   (SQLite recursive CTE, PostgreSQL generate_series) across REPOSITORIES x tags and two
   destinations; then the median and p95 of: `status` of a tag (`replicator jobs status`, the
   API's DescribeImageReplicationStatus), a claim of the one due job among them (add one job,
   claim it, complete it), the metrics' `counts` (jobs per state and destination, read by the
   fleet's lease holder) and a renewal of the fleet's lease (every member asks every 1.5 s).

Prints a table; writes bench/results/journal-<time>.json. Exit 1 when a job was lost or claimed
twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from replicator.domain.jobs import NO_ORIGIN, JobKey, JobKind, JobState
from replicator.domain.jobs.ends import Completed, CopyCounters
from replicator.journal import Journal
from replicator.journal.event_rows import ReceivedEvent
from replicator.journal.models import EventOutcome
from replicator.journal.schema import create_journal_engine

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DESTINATIONS = ("usw2", "euw1")
SOURCE = "use1"
# Jobs a claimer takes per claim: the daemon claims up to its free workers (concurrency 16).
CLAIM_BATCH = 8
# Repositories the finished jobs are spread over (a fleet's catalog), tags per repository
# follow from the table size.
REPOSITORIES = 1000
# Samples per latency figure.
SAMPLES = 50
# A claimer that finds nothing due this many times in a row stops (the queue is drained).
EMPTY_CLAIMS_TO_STOP = 3
# Generated rows are inserted in batches of this many (one statement each).
FILL_BATCH = 100_000


def _now() -> datetime:
    return datetime.now(UTC)


def _keys(number: int) -> list[JobKey]:
    digest = f"sha256:{number:064x}"
    return [
        JobKey(SOURCE, f"bench/r{number % REPOSITORIES:04d}", digest, f"p{number}", destination)
        for destination in DESTINATIONS
    ]


@contextmanager
def _postgres() -> Iterator[Callable[[], str]]:
    """A PostgreSQL cluster for the run; yields a function creating an empty database's URL."""
    from tests.support import journal_fixtures as pg
    from tests.support.ports import free_port, wait_listening

    bin_dir = pg._postgres_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")
    base = Path(tempfile.mkdtemp(prefix="replicator-journal-bench-pg-"))
    if os.geteuid() == 0:
        import pwd

        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
    data, port = base / "data", free_port()
    options = (
        f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off "
        "-c max_connections=200"
    )
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log")]
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", pg.POSTGRES_USER, "-A", "trust"]
    try:
        pg._run_as_server_user([*initdb, "-E", "UTF8", "--no-locale", "--no-sync"])
        pg._run_as_server_user([*pg_ctl, "-w", "-t", "60", "-o", options, "start"])
        wait_listening(port)
        server = pg.PostgresServer("127.0.0.1", port, pg.POSTGRES_USER)
        yield server.create_database
    finally:
        pg._run_as_server_user([*pg_ctl, "-m", "immediate", "stop"], check=False)
        shutil.rmtree(base, ignore_errors=True)


def _claimer(url: str, ready: Any, go: Any, done: Any) -> None:
    """One claimer process: connect, wait for the start, claim and complete until drained."""

    async def run() -> int:
        journal = await Journal.open(url, claimer=f"bench/{os.getpid()}")
        finished, empty = 0, 0
        try:
            await journal.backlog()  # connected and warm before the clock starts
            ready.release()
            await asyncio.to_thread(go.wait)
            while empty < EMPTY_CLAIMS_TO_STOP:
                jobs = await journal.claim_due(CLAIM_BATCH, _now())
                if not jobs:
                    empty += 1
                    await asyncio.sleep(0.01)
                    continue
                empty = 0
                for job in jobs:
                    assert job.id is not None
                    await journal.end(
                        job.id,
                        Completed(CopyCounters(bytes_copied=1, blobs_copied=1)),
                    )
                    finished += 1
        finally:
            await journal.close()
        return finished

    done.put(asyncio.run(run()))


async def _record(url: str, pushes: int) -> float:
    """Record `pushes` events of two jobs each; seconds taken."""
    async with await Journal.open(url, claimer="bench/recorder") as journal:
        started = time.monotonic()
        for number in range(pushes):
            await journal.record_event(
                ReceivedEvent(
                    source=SOURCE,
                    topic="registry/use1/events",
                    payload=f"push {number}".encode(),
                    outcome=EventOutcome.ACCEPTED,
                    reason="",
                    job_keys=_keys(number),
                    pushed_at=_now(),
                )
            )
        return time.monotonic() - started


async def _check_all_complete(url: str, expected: int) -> list[str]:
    async with await Journal.open(url, claimer="bench/checker") as journal:
        counts = await journal.counts()
    complete = sum(n for (state, _), n in counts.items() if state is JobState.COMPLETE)
    others = {f"{s.value}/{d}": n for (s, d), n in counts.items() if s is not JobState.COMPLETE}
    if complete != expected or others:
        return [f"{complete} of {expected} COMPLETE, others: {others}"]
    return []


def throughput(new_url: Callable[[], str], pushes: int, claimers: int) -> dict[str, Any]:
    """Record, then drain with `claimers` processes; rates and problems."""
    url = new_url()
    record_seconds = asyncio.run(_record(url, pushes))
    context = multiprocessing.get_context("spawn")
    ready, go, done = context.Semaphore(0), context.Event(), context.Queue()
    processes = [
        context.Process(target=_claimer, args=(url, ready, go, done)) for _ in range(claimers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    started = time.monotonic()
    go.set()
    finished = sum(done.get(timeout=600) for _ in processes)
    drain_seconds = time.monotonic() - started - EMPTY_CLAIMS_TO_STOP * 0.01
    for process in processes:
        process.join(60)
    jobs = pushes * len(DESTINATIONS)
    problems = asyncio.run(_check_all_complete(url, jobs))
    if finished != jobs:
        problems.append(f"claimers completed {finished} jobs, expected {jobs}")
    return {
        "claimers": claimers,
        "pushes": pushes,
        "pushes_recorded_per_second": round(pushes / record_seconds, 1),
        "jobs_claimed_completed_per_second": round(jobs / drain_seconds, 1),
        "problems": problems,
    }


def _fill(url: str, count: int) -> None:
    """Insert `count` COMPLETE jobs generated by the database itself."""
    engine = create_journal_engine(url)
    moment = _now().strftime("%Y-%m-%d %H:%M:%S.%f")
    columns = (
        "kind, source, repository, digest, tag, destination, state, attempts, bytes_copied, "
        "blobs_copied, blobs_mounted, blobs_skipped, created_at, updated_at, started_at, "
        "finished_at, pushed_at, origin, deaths"
    )
    values = (
        f"'{JobKind.COPY.value}', '{SOURCE}', {{repository}}, {{digest}}, {{tag}}, "
        f"CASE WHEN i % 2 = 0 THEN '{DESTINATIONS[0]}' ELSE '{DESTINATIONS[1]}' END, "
        f"'{JobState.COMPLETE.value}', 1, 1, 1, 0, 0, :now, :now, :now, :now, :now, "
        f"'{NO_ORIGIN}', 0"
    )
    # One image per two rows (two destinations); the digests are distinct from _keys()'s.
    image = "(i / 2)"
    if engine.dialect.name == "sqlite":
        repository = f"'bench/r' || printf('%04d', {image} % {REPOSITORIES})"
        digest = f"'sha256:f' || printf('%063x', {image})"
        tag = f"'t' || {image}"
        template = (
            "WITH RECURSIVE n(i) AS (SELECT :low UNION ALL SELECT i + 1 FROM n WHERE i < :high) "
            f"INSERT INTO jobs ({columns}) SELECT {values} FROM n"
        )
    else:
        repository = f"'bench/r' || lpad(({image} % {REPOSITORIES})::text, 4, '0')"
        digest = f"'sha256:f' || lpad(to_hex({image}), 63, '0')"
        tag = f"'t' || {image}"
        template = (
            f"INSERT INTO jobs ({columns}) SELECT {values} "
            "FROM generate_series(CAST(:low AS bigint), CAST(:high AS bigint)) AS i"
        )
    statement = text(template.format(repository=repository, digest=digest, tag=tag))
    with engine.begin() as connection:
        existing = connection.execute(text("SELECT count(*) FROM jobs")).scalar_one()
    for low in range(existing, count, FILL_BATCH):
        high = min(low + FILL_BATCH, count) - 1
        with engine.begin() as connection:
            connection.execute(statement, {"low": low, "high": high, "now": moment})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE jobs"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    engine.dispose()


async def _timed(samples: int, call: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    times = []
    for number in range(samples):
        started = time.perf_counter()
        await call(number)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
    }


async def _latencies(url: str, finished: int) -> dict[str, Any]:
    async with await Journal.open(url, claimer="bench/latency") as journal:
        images = max(finished // 2, 1)

        async def status(number: int) -> None:
            image = (number * 7919) % images
            found = await journal.status(
                SOURCE, f"bench/r{image % REPOSITORIES:04d}", tag=f"t{image}"
            )
            assert len(found) == 2, found

        async def claim(number: int) -> None:
            await journal.add_jobs(_keys(10_000_000 + finished + number)[:1])
            jobs = await journal.claim_due(CLAIM_BATCH, _now())
            assert len(jobs) == 1, jobs
            assert jobs[0].id is not None
            await journal.end(
                jobs[0].id,
                Completed(CopyCounters(bytes_copied=1, blobs_copied=1)),
            )

        async def claim_only(number: int) -> None:
            await journal.claim_due(CLAIM_BATCH, _now())

        async def counts(number: int) -> None:
            await journal.counts()

        async def lease(number: int) -> None:
            await journal.take_lease("bench", 6.0)  # a fleet member's renewal (daemon/fleet.py)

        return {
            "finished": finished,
            "status_of_tag": await _timed(SAMPLES, status),
            "add_claim_complete": await _timed(SAMPLES, claim),
            "claim_nothing_due": await _timed(SAMPLES, claim_only),
            "metrics_counts": await _timed(min(SAMPLES, 10), counts),
            "fleet_lease_renewal": await _timed(SAMPLES, lease),
        }


async def _create(url: str) -> None:
    """Create the journal's tables (opening it does)."""
    async with await Journal.open(url, claimer="bench/create"):
        pass


def latency(url: str, finished: int) -> dict[str, Any]:
    """Fill the table to `finished` COMPLETE jobs, then time status, claim and counts."""
    asyncio.run(_create(url))
    started = time.monotonic()
    _fill(url, finished)
    print(f"  filled to {finished} finished jobs ({time.monotonic() - started:.0f} s)", flush=True)
    return asyncio.run(_latencies(url, finished))


def run_backend(name: str, new_url: Callable[[], str], args: argparse.Namespace) -> dict[str, Any]:
    """Throughput per claimer count, then latency per table size, on one backend."""
    result: dict[str, Any] = {"backend": name, "throughput": [], "latency": []}
    for claimers in args.claimers:
        print(f"[{name}] throughput, {claimers} claimer process(es) ...", flush=True)
        result["throughput"].append(throughput(new_url, args.pushes, claimers))
        print(f"  {result['throughput'][-1]}", flush=True)
    url = new_url()
    for finished in sorted(args.finished):
        print(f"[{name}] latency with {finished} finished jobs ...", flush=True)
        result["latency"].append(latency(url, finished))
        print(f"  {result['latency'][-1]}", flush=True)
    return result


def _print(results: list[dict[str, Any]]) -> None:
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    for result in results:
        name = result["backend"]
        for row in result["throughput"]:
            print(
                f"{name:<10} {row['claimers']:>2} claimers: {row['pushes_recorded_per_second']:>7}"
                f" pushes recorded/s (2 jobs each), {row['jobs_claimed_completed_per_second']:>7}"
                f" jobs claimed+completed/s {'ok' if not row['problems'] else row['problems']}"
            )
        for row in result["latency"]:
            parts = ", ".join(
                f"{key} {value['p50_ms']} ms (p95 {value['p95_ms']})"
                for key, value in row.items()
                if isinstance(value, dict)
            )
            print(f"{name:<10} {row['finished']:>8} finished: {parts}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when a job was lost or claimed twice."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument(
        "--claimers", type=lambda v: [int(n) for n in v.split(",") if n], default=[1, 4, 16, 64]
    )
    parser.add_argument(
        "--finished",
        type=lambda v: [int(n) for n in v.split(",") if n],
        default=[10_000, 1_000_000],
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="replicator-journal-bench-"))
    numbers = iter(range(1_000_000))
    results = []
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                results.append(
                    run_backend("sqlite", lambda: f"sqlite:///{workdir}/j{next(numbers)}.db", args)
                )
            elif backend == "postgresql":
                with _postgres() as create_database:
                    results.append(run_backend("postgresql", create_database, args))
            else:
                raise SystemExit(f"unknown backend {backend!r}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _print(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    output = RESULTS_DIR / f"journal-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.write_text(json.dumps({"load": os.getloadavg()[0], "results": results}, indent=2))
    print(f"results: {output}")
    failed = any(row["problems"] for result in results for row in result["throughput"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
