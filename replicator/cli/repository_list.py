"""`--repository NAME` (repeatable) and `--repositories-from FILE`: repositories named where a
registry has no catalog to list them (Docker Hub, GHCR, ECR) or where only a few are wanted."""

from __future__ import annotations

import argparse
from pathlib import Path

from replicator.domain.images.refs import validate_repository
from replicator.errors import InvalidReferenceError, UsageError

# A repositories file larger than this is refused: a million names is far beyond any registry's
# repository count, and the list is held in memory.
MAX_REPOSITORIES_FILE_BYTES = 64 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser, *, instead_of: str) -> None:
    """Add both options; `instead_of` says what they replace (in the help)."""
    parser.add_argument(
        "--repository",
        action="append",
        metavar="NAME",
        help=f"this repository (repeatable), instead of {instead_of}",
    )
    parser.add_argument(
        "--repositories-from",
        metavar="FILE",
        help="repositories named in FILE, one per line ('#' comments and blank lines skipped)",
    )


def chosen(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The repositories the options name (validated, in order, each once), or None when
    neither option was given."""
    names: list[str] = list(args.repository or [])
    if args.repositories_from:
        names += _read(Path(args.repositories_from))
    if args.repository is None and not args.repositories_from:
        return None
    if not names:
        raise UsageError(f"--repositories-from {args.repositories_from}: names no repository")
    try:
        return tuple(dict.fromkeys(validate_repository(name) for name in names))
    except InvalidReferenceError as exc:
        raise UsageError(f"--repository: {exc}") from exc


def _read(path: Path) -> list[str]:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_REPOSITORIES_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--repositories-from {path}: {exc.strerror}") from exc
    if len(data) > MAX_REPOSITORIES_FILE_BYTES:
        raise UsageError(f"--repositories-from {path}: over {MAX_REPOSITORIES_FILE_BYTES} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise UsageError(f"--repositories-from {path}: not UTF-8 text") from exc
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]
