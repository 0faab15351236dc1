"""What `replicator backfill` shows: the progress line, the plan of a dry run, the summary."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from replicator.cli.documents import INDENT, document, print_json
from replicator.cli.progress import progress_text
from replicator.domain.jobs import TERMINAL_STATES
from replicator.domain.routing.scan import TagAction, TagPlan
from replicator.scan.backfill_run import BackfillReport
from replicator.scan.scanning import ScanCounts

if TYPE_CHECKING:
    from replicator.journal.models import JobRow


def progress_line(report: BackfillReport, elapsed: float) -> str:
    """The scan's counts, then the jobs as images done of those journalled, bytes, rate, ETA."""
    counts, tally = report.counts, report.tally
    failed = tally.failed if tally is not None else 0
    done = (tally.done if tally is not None else 0) + failed
    return (
        f"backfill: {counts.repositories} repositories, {counts.tags} tags, "
        f"{counts.up_to_date} up to date, {counts.denied} denied; "
        + progress_text(
            images_done=done, images_total=counts.copies, failed=failed,
            bytes_done=report.bytes_copied, elapsed=elapsed,
        )
    )  # fmt: skip


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _plan_entry(plan: TagPlan) -> dict[str, Any]:
    key = plan.key
    return {
        "action": plan.action.value, "source": key.source, "repository": key.repository,
        "tag": key.tag, "digest": key.digest, "destination": key.destination,
        "reason": plan.reason,
    }  # fmt: skip


def _counts_doc(counts: ScanCounts) -> dict[str, Any]:
    return {
        "repositories": counts.repositories, "tags": counts.tags,
        "up_to_date": counts.up_to_date, "errors": counts.errors,
    }  # fmt: skip


class PlanPrinter:
    """Prints a dry run's plans as the scan finds them (in scan order: nothing is held), then
    its summary; with `as_json` one document whose `plan` list is written entry by entry."""

    def __init__(self, *, as_json: bool, out: TextIO) -> None:
        self._as_json = as_json
        self._out = out
        self._entries = 0
        if as_json:
            head = json.dumps(document("backfill", {"dry_run": True}))[:-1]
            out.write(f'{head}, "plan": [')

    def __call__(self, plan: TagPlan) -> None:
        """Print one plan."""
        if self._as_json:
            separator = "," if self._entries else ""
            self._out.write(f"{separator}\n{' ' * INDENT}{json.dumps(_plan_entry(plan))}")
        else:
            key = plan.key
            image = f"{key.source}/{key.repository}:{key.tag}@{key.digest}"
            print(
                f"{plan.action.value:<7} {image} -> {key.destination}: {plan.reason}",
                file=self._out,
            )
        self._entries += 1

    def finish(self, report: BackfillReport, seconds: float) -> None:
        """Print the summary (close the JSON document)."""
        counts, verbs = report.counts, report.planned
        if self._as_json:
            tail = {**_counts_doc(counts), "seconds": round(seconds, 3)}
            self._out.write(f"\n], {json.dumps(tail)[1:]}\n")
            return
        print(
            f"dry run: {counts.repositories} repositories, {counts.tags} tags scanned; "
            f"{counts.up_to_date} up to date, {verbs.get(TagAction.COPY, 0)} to copy, "
            f"{verbs.get(TagAction.REPAIR, 0)} to repair, {verbs.get(TagAction.DENIED, 0)} "
            "denied; nothing written",
            file=self._out,
        )
        print_errors(counts.errors)


def _row_entry(row: JobRow) -> dict[str, Any]:
    return {
        "job": row.id, "source": row.source, "repository": row.repository, "tag": row.tag,
        "digest": row.digest, "destination": row.destination, "state": row.state.value,
        "code": row.failure_code, "reason": row.failure_reason,
    }  # fmt: skip


def _by_destination(report: BackfillReport) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    empty = {"complete": 0, "failed": 0, "denied": 0, "repaired": 0, "bytes": 0}
    for name, totals in report.jobs.destinations.items():
        line = table.setdefault(name, dict(empty))
        line["complete"] += totals.complete
        line["failed"] += totals.failed
        line["denied"] += totals.denied
        line["bytes"] += totals.bytes
    repairs = report.repairs
    for name in {*repairs.repaired, *repairs.failed}:
        line = table.setdefault(name, dict(empty))
        line["repaired"] += repairs.repaired[name]
        line["failed"] += repairs.failed[name]
        line["bytes"] += repairs.bytes[name]
    return table


def _unlisted(report: BackfillReport) -> int:
    """Jobs and failed repairs counted in the summary but not listed (a large run)."""
    repairs = report.repairs
    return report.jobs.unlisted + repairs.failed.total() - len(repairs.failures)


def print_summary(report: BackfillReport, seconds: float, *, as_json: bool, out: TextIO) -> None:
    table = _by_destination(report)
    if as_json:
        body = {
            "dry_run": False, "outcome": report.outcome.value, "interrupted": report.interrupted,
            **_counts_doc(report.counts), "jobs": report.jobs.jobs, "unlisted": _unlisted(report),
            "bytes_copied": report.bytes_copied, "seconds": round(seconds, 3),
            "destinations": dict(sorted(table.items())),
            "failures": [_row_entry(r) for r in report.failed]
            + [
                {"destination": r.key.destination, "repository": r.key.repository,
                 "tag": r.key.tag, "digest": r.key.digest, "state": "REPAIR_FAILED",
                 "code": (r.error or "").split(":", 1)[0], "reason": r.error}
                for r in report.repairs.failures
            ],
            "denied": [_row_entry(r) for r in report.denied],
            "unfinished": [_row_entry(r) for r in report.rows
                           if r.state not in TERMINAL_STATES],
        }  # fmt: skip
        print_json(document("backfill", body), out)
        return
    header = ("DESTINATION", "COMPLETE", "FAILED", "DENIED", "REPAIRED", "BYTES")
    lines = [header] + [
        (name, *(str(line[k]) for k in ("complete", "failed", "denied", "repaired")),
         _megabytes(line["bytes"]))
        for name, line in sorted(table.items())
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)), file=out
        )
    for row in report.failed:
        print(f"failed: {_image(row)} -> {row.destination}: {row.failure_code}: "
              f"{row.failure_reason}", file=out)  # fmt: skip
    for result in report.repairs.failures:
        print(f"repair failed: {result.key}: {result.error}", file=out)
    for row in report.denied:
        print(f"denied: {_image(row)} -> {row.destination}: {row.failure_reason}", file=out)
    counts = report.counts
    state = "INTERRUPTED" if report.interrupted else report.outcome.value
    print(
        f"backfill {state}: {counts.repositories} repositories, {counts.tags} tags, "
        f"{counts.up_to_date} up to date, {report.jobs.jobs} jobs, "
        f"{_megabytes(report.bytes_copied)} in {seconds:.1f} s",
        file=out,
    )
    if unlisted := _unlisted(report):
        print(f"{unlisted} more jobs not listed: replicator status has them all", file=out)
    if report.interrupted:
        print("interrupted: run backfill again to resume", file=out)
    print_errors(counts.errors)


def _image(row: JobRow) -> str:
    return f"{row.source}/{row.repository}:{row.tag}@{row.digest}"


def print_errors(errors: Sequence[str]) -> None:
    """Scan errors, one line each, on stderr."""
    for error in errors:
        print(f"scan error: {error}", file=sys.stderr)
