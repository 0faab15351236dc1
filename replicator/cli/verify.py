"""`replicator verify`: audit the destinations against the sources; exit 1 on drift."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict

from replicator.cli import repository_list
from replicator.cli.documents import document, print_json
from replicator.config.loading import load_config
from replicator.errors import UsageError
from replicator.scan.verify import DriftItem, VerifyReport, run_verify

# Characters of a drift detail shown in the table; --json has it whole.
TABLE_DETAIL_CHARS = 100


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `verify` subcommand."""
    parser = subparsers.add_parser(
        "verify",
        help="find drift between sources and destinations (exit 1 on drift)",
        description="Check that every source tag the rules select resolves to the same digest "
        "at every destination the policy allows, with every manifest and blob present; with "
        "delete replication on, destination tags absent at the source are drift too. Reads only.",
    )
    parser.add_argument("--source", metavar="NAME", help="only this source registry")
    repository_list.add_arguments(parser, instead_of="the config's list or the catalog")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle `replicator verify`."""
    config = load_config(args.config)
    if args.source is not None and args.source not in config.registries:
        raise UsageError(f"--source {args.source!r} names no registry of {config.path}")
    chosen = repository_list.chosen(args)
    report = asyncio.run(run_verify(config, source=args.source, repositories=chosen))
    if args.json:
        _print_json(report)
    else:
        _print_table(report)
    return 0 if report.clean else 1


def _print_json(report: VerifyReport) -> None:
    body = {
        "clean": report.clean,
        "repositories": report.repositories,
        "tags_checked": report.tags_checked,
        "drift": [asdict(item) for item in _sorted(report)],
        "errors": report.errors,
    }
    print_json(document("verify", body))


def _sorted(report: VerifyReport) -> list[DriftItem]:
    return sorted(
        report.items, key=lambda i: (i.source, i.destination, i.repository, i.tag or "", i.drift)
    )


def _print_table(report: VerifyReport) -> None:
    header = ("SOURCE", "DESTINATION", "REPOSITORY", "TAG", "DRIFT", "DETAIL")
    lines = [header] + [
        (
            item.source,
            item.destination,
            item.repository,
            item.tag or "-",
            item.drift.value,
            item.detail[:TABLE_DETAIL_CHARS],
        )
        for item in _sorted(report)
    ]
    if len(lines) > 1:
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    verdict = "clean" if report.clean else f"{len(report.items)} drift(s)"
    print(
        f"verify: {report.repositories} repositories, {report.tags_checked} tag checks: {verdict}"
    )
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
