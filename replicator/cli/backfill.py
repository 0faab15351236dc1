"""`replicator backfill`: replicate what already exists, through the journal and the same workers.

The run itself is replicator/scan/backfill_run.py: scan the sources, journal a job per tag
missing or different at a destination, run the jobs in-process until each is COMPLETE or FAILED
(a daemon on the same journal shares them). This module parses the arguments, draws the progress
line, prints the summary (or with `--dry-run` the plan) and chooses the exit code.
Interrupted (Ctrl-C, SIGTERM), the next run resumes where this one stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from replicator.cli import repository_list
from replicator.cli.backfill_output import (
    PlanPrinter,
    print_summary,
    progress_line,
)
from replicator.cli.parsing import byte_rate
from replicator.cli.progress import drawn
from replicator.config.loading import Config, load_config
from replicator.domain.routing.scan import RunOutcome
from replicator.errors import UsageError
from replicator.logs import get_logger
from replicator.scan.backfill_run import BackfillReport, run_backfill
from replicator.scan.scanning import ScanCounts, ScanOptions

log = get_logger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `backfill` subcommand."""
    parser = subparsers.add_parser(
        "backfill",
        help="replicate images that already exist at the sources",
        description="Enumerate the source registries, compare every tag the rules select with "
        "each destination (HEAD), journal a job for what is missing or different and run the "
        "jobs. Exit 1 when a job failed.",
    )
    parser.add_argument("--source", metavar="NAME", help="only this source registry")
    parser.add_argument("--destination", metavar="NAME", help="only this destination registry")
    parser.add_argument(
        "--repository-prefix", default="", metavar="P", help="only repositories P or P/..."
    )
    repository_list.add_arguments(parser, instead_of="the config's list or the catalog")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan; write nothing anywhere"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--max-bandwidth",
        type=byte_rate,
        default=None,
        metavar="RATE",
        help="blob bytes per second to and from each registry of the run (--destination's "
        "only, if given), all jobs together; overrides the config's max_bandwidth (suffix k, "
        "M or G: binary multiples)",
    )
    parser.set_defaults(func=run)


# -- the command ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Handle `replicator backfill`."""
    config = load_config(args.config)
    options = ScanOptions(
        args.source, args.destination, args.repository_prefix, repository_list.chosen(args)
    )
    for name, flag in ((args.source, "--source"), (args.destination, "--destination")):
        if name is not None and name not in config.registries:
            raise UsageError(f"{flag} {name!r} names no registry of {config.path}")
    if args.max_bandwidth is not None:
        config = _with_bandwidth(config, args.max_bandwidth, only=args.destination)
    started = time.monotonic()
    out = sys.stdout
    printer = PlanPrinter(as_json=args.json, out=out) if args.dry_run else None
    report = asyncio.run(_main(config, options, dry_run=args.dry_run, on_plan=printer))
    seconds = time.monotonic() - started
    if printer is not None:
        printer.finish(report, seconds)
        return 1 if report.counts.errors or report.interrupted else 0
    print_summary(report, seconds, as_json=args.json, out=out)
    clean = report.outcome is RunOutcome.COMPLETE and not report.counts.errors
    return 0 if clean and not report.interrupted else 1


def _with_bandwidth(config: Config, rate: int, *, only: str | None) -> Config:
    """`config` with `max_bandwidth = rate` for registry `only`, or for every registry."""
    registries = {
        name: registry.model_copy(update={"max_bandwidth": rate})
        if only is None or name == only
        else registry
        for name, registry in config.registries.items()
    }
    return config.model_copy(update={"registries": registries})


async def _main(
    config: Config, options: ScanOptions, *, dry_run: bool, on_plan: PlanPrinter | None
) -> BackfillReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    report = BackfillReport(ScanCounts())
    started = time.monotonic()
    async with drawn(lambda: progress_line(report, time.monotonic() - started), sys.stderr):
        return await run_backfill(
            config, options, dry_run=dry_run, stop=stop, report=report, on_plan=on_plan
        )
