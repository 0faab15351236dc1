"""`replicator status`, `replicator jobs` and `replicator retry`: ask and act on the journal.

`status` answers in the shape of ECR's DescribeImageReplicationStatus (plus `failureReason` and
the destination's `registryName`); every command prints a table for people, or JSON with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from replicator.cli import documents
from replicator.cli.documents import error_document, print_json
from replicator.domain.images.refs import validate_image_query
from replicator.domain.jobs import JobState
from replicator.errors import InvalidReferenceError, UsageError

if TYPE_CHECKING:
    from replicator.journal import JobRow, Journal
    from replicator.journal.status import Located

EXIT_OK = 0
EXIT_FAILED = 1
# Hex digits of a digest shown in tables: enough to tell images apart, short enough for a line.
SHORT_DIGEST_HEX = 12
# Characters of a failure reason shown in a table cell; --json has the whole reason.
TABLE_REASON_CHARS = 60


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `status`, `jobs` and `retry` subcommands."""
    status = subparsers.add_parser(
        "status",
        help="where an image has been replicated (ECR DescribeImageReplicationStatus)",
        description="Show the replication status of one image at every destination.",
    )
    status.add_argument("--repository", required=True, metavar="NAME")
    image = status.add_mutually_exclusive_group(required=True)
    image.add_argument("--image-digest", metavar="DIGEST")
    image.add_argument("--image-tag", metavar="TAG")
    status.add_argument("--source", metavar="REGISTRY", help="source registry name (default: any)")
    status.set_defaults(func=run_status)

    jobs = subparsers.add_parser(
        "jobs", help="list replication jobs", description="List jobs, the most recent first."
    )
    jobs.add_argument(
        "--state",
        type=_state,
        metavar="STATE",
        help=f"only jobs in this state: {', '.join(s.value for s in JobState)}",
    )
    jobs.add_argument(
        "--limit",
        type=int,
        default=100,
        help="at most this many, the newest (default: 100); a cut list says so on stderr",
    )
    jobs.set_defaults(func=run_jobs)

    retry = subparsers.add_parser(
        "retry",
        help="re-queue failed jobs",
        description="Re-queue FAILED jobs as PENDING with a fresh attempt count; a running "
        "daemon picks them up.",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", type=int, metavar="ID", help="one failed job")
    which.add_argument("--all-failed", action="store_true", help="every failed job")
    retry.set_defaults(func=run_retry)

    for parser in (status, jobs, retry):
        parser.add_argument("--json", action="store_true", help="print JSON for machines")


def _state(text: str) -> JobState:
    try:
        return JobState(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a state: {', '.join(s.value for s in JobState)}"
        ) from None


async def _open(url: str) -> Journal:
    """The journal at `url` (imported here: SQLAlchemy would slow down `replicator --help`)."""
    from replicator.journal.claimers import open_journal

    return await open_journal(url)


def _journal_url(args: argparse.Namespace) -> tuple[str, Mapping[str, Located]]:
    from replicator.config.loading import load_config

    config = load_config(args.config)
    return config.journal.url, config.registries


def _validated(args: argparse.Namespace) -> None:
    try:
        validate_image_query(args.repository, args.image_digest, args.image_tag)
    except InvalidReferenceError as exc:
        raise UsageError(str(exc)) from exc


def run_status(args: argparse.Namespace) -> int:
    """`replicator status`: 0 when the image has jobs, 1 when the journal knows none."""
    _validated(args)
    url, registries = _journal_url(args)
    if args.source is not None and args.source not in registries:
        raise UsageError(
            f"--source {args.source!r} is not a registry of the config (its registries: "
            f"{', '.join(sorted(registries)) or 'none'}); give one of them, or leave --source "
            "out for any source"
        )

    async def query() -> tuple[list[JobRow], dict[str, datetime]]:
        async with await _open(url) as journal:
            rows = await journal.status(
                args.source, args.repository, digest=args.image_digest, tag=args.image_tag
            )
            return rows, await journal.unreachable()

    rows, unreachable = asyncio.run(query())
    if not rows:
        image = args.image_digest or f"tag {args.image_tag}"
        message = (
            f"no replication jobs for {args.repository} {image}"
            + (f" from {args.source}" if args.source else "")
            + ": the journal has none (not pushed since the daemon ran, or replicated by no "
            "rule: `replicator config check` lists the rules; `replicator backfill` replicates "
            "images that were there before)"
        )
        print(f"replicator status: {message}", file=sys.stderr)
        if args.json:
            print_json(error_document("status", "NOT_FOUND", message))
        return EXIT_FAILED
    from replicator.journal.status import status_document  # SQLAlchemy: not for --help

    document = status_document(
        args.repository, rows, registries, tag=args.image_tag, unreachable=unreachable
    )
    if args.json:
        # ECR's DescribeImageReplicationStatus shape (camelCase), under our schema version.
        print_json(documents.document("status", document))
        return EXIT_OK
    image_id = document["imageId"]
    print(f"repository  {args.repository}")
    print(f"digest      {image_id['imageDigest']}")
    if "imageTag" in image_id:
        print(f"tag         {image_id['imageTag']}")
    print()
    table = [
        [
            s["registryName"],
            s["region"] or "?",
            s["registryId"] or "?",
            s["status"],
            s.get("statusReason") or _failure(s.get("failureCode"), s.get("failureReason")),
        ]
        for s in document["replicationStatuses"]
    ]
    # REASON: why it failed, or why it is not done yet (its destination is unreachable).
    print(render_table(["DESTINATION", "REGION", "REGISTRY ID", "STATUS", "REASON"], table))
    return EXIT_OK


def _failure(code: str | None, reason: str | None) -> str:
    if not code:
        return "-"
    text = f"{code}: {reason}" if reason else code
    if len(text) > TABLE_REASON_CHARS:
        return text[: TABLE_REASON_CHARS - 1] + "…"
    return text


def _image(row: JobRow) -> str:
    algorithm, _, hex_digits = row.digest.partition(":")
    text = f"{row.source}/{row.repository}"
    if row.tag:
        text += f":{row.tag}"
    return f"{text}@{algorithm}:{hex_digits[:SHORT_DIGEST_HEX]}"


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def job_document(row: JobRow) -> dict[str, Any]:
    """One job as `jobs --json` prints it (README "JSON output"): times in ISO 8601 UTC,
    the failure as an object or null; which process holds a job is not part of it."""
    failure = {"code": row.failure_code, "reason": row.failure_reason} if row.failure_code else None
    return {
        "id": row.id, "kind": row.kind.value, "state": row.state.value,
        "source": row.source, "repository": row.repository, "tag": row.tag,
        "digest": row.digest, "destination": row.destination, "attempts": row.attempts,
        "failure": failure, "bytes_copied": row.bytes_copied,
        "blobs_copied": row.blobs_copied, "blobs_mounted": row.blobs_mounted,
        "blobs_skipped": row.blobs_skipped, "pushed_at": _time(row.pushed_at),
        "created_at": _time(row.created_at), "updated_at": _time(row.updated_at),
        "started_at": _time(row.started_at), "finished_at": _time(row.finished_at),
        "next_attempt_at": _time(row.next_attempt_at),
    }  # fmt: skip


def run_jobs(args: argparse.Namespace) -> int:
    """`replicator jobs`: list jobs."""
    url, _ = _journal_url(args)

    async def query() -> list[JobRow]:
        async with await _open(url) as journal:
            # One more than asked: whether the list was cut at the limit.
            return await journal.jobs(args.state, limit=args.limit + 1)

    found = asyncio.run(query())
    rows, truncated = found[: args.limit], len(found) > args.limit
    if args.json:
        jobs = [job_document(row) for row in rows]
        print_json(documents.document("jobs", {"jobs": jobs, "truncated": truncated}))
        return EXIT_OK
    if truncated:
        # On stderr: the table on stdout stays whole for `| sort`, `| awk`.
        print(
            f"showing the {args.limit} most recent jobs; more match (--limit to see more)",
            file=sys.stderr,
        )
    table = [
        [
            str(row.id),
            row.kind.value,
            row.state.value,
            str(row.attempts),
            _image(row),
            row.destination,
            row.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            _failure(row.failure_code, row.failure_reason),
        ]
        for row in rows
    ]
    headers = ["ID", "KIND", "STATE", "ATTEMPTS", "IMAGE", "DESTINATION", "UPDATED (UTC)"]
    print(render_table([*headers, "LAST FAILURE"], table))
    return EXIT_OK


def run_retry(args: argparse.Namespace) -> int:
    """`replicator retry`: 0 when something was re-queued (or nothing had failed), else 1."""
    url, _ = _journal_url(args)

    async def act() -> tuple[int, JobRow | None]:
        async with await _open(url) as journal:
            count = await journal.retry_failed(None if args.all_failed else args.job)
            row = None if count or args.all_failed else await journal.job(args.job)
            return count, row

    count, row = asyncio.run(act())
    if args.all_failed or count:
        message = (
            f"re-queued {count} failed job{'' if count == 1 else 's'}"
            if args.all_failed
            else f"re-queued job {args.job}"
        )
        if args.json:
            print_json(documents.document("retry", {"requeued": count, "job": args.job}))
        else:
            print(message)
        return EXIT_OK
    if row is None:
        code, message = "NOT_FOUND", f"job {args.job} does not exist"
    else:
        code = "NOT_FAILED"
        message = f"job {args.job} is {row.state.value}; only FAILED jobs are re-queued"
    print(f"replicator retry: {message}", file=sys.stderr)
    if args.json:
        print_json(error_document("retry", code, message))
    return EXIT_FAILED


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, a header line first."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
