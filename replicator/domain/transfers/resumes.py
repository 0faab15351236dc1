"""Resuming a blob transfer the link broke: where to continue from, and when to give up.

A download continues with `Range: bytes=N-` and is answered `Content-Range: bytes N-E/T`; an
upload asks the registry how much it holds (`Range: 0-E` on its upload URL) and continues with
PATCHes from E + 1. Both go on while each resume brings new bytes, and give up after
MAX_STALLED_RESUMES in a row that brought none (the link is down, not dropping).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Resumes in a row that brought no new byte before a transfer gives up and fails as before
# (the job's own retries and backoff take over): a link that drops now and then always moves
# some bytes between drops; one that moves none is down.
MAX_STALLED_RESUMES = 3
# Wait before a resume after one that brought nothing: a blip passes within a second, and a
# transfer that keeps moving resumes at once.
STALLED_RESUME_WAIT_SECONDS = 0.5

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
# Distribution answers "0-E"; some registries write "bytes=0-E" as in a request.
_UPLOAD_RANGE = re.compile(r"(?:bytes[=\s]\s*)?0-(\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ContentRange:
    """`Content-Range: bytes START-END/TOTAL` of a 206 answer (END inclusive; TOTAL unknown
    as None)."""

    start: int
    end: int
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    """The Content-Range of a partial answer, or None when absent or malformed."""
    if not value:
        return None
    found = _CONTENT_RANGE.fullmatch(value.strip())
    if found is None:
        return None
    start, end = int(found[1]), int(found[2])
    if end < start:
        return None
    total = None if found[3] == "*" else int(found[3])
    return ContentRange(start, end, total)


def upload_offset(value: str | None) -> int | None:
    """Bytes an upload session holds, from the `Range: 0-E` of its status (E inclusive), or
    None when the header is absent or malformed.

    "0-0" means nothing held: the spec's answer for a fresh session (a 1-byte upload would say
    the same, and resending its byte costs nothing)."""
    if not value:
        return None
    found = _UPLOAD_RANGE.fullmatch(value.strip())
    if found is None:
        return None
    end = int(found[1])
    return 0 if end == 0 else end + 1


@dataclass(frozen=True, slots=True)
class Resume:
    """Resume the transfer, after `wait_seconds`; `stalled` resumes in a row brought nothing."""

    stalled: int
    wait_seconds: float


def after_break(*, offset: int, resumed_at: int, stalled: int) -> Resume | None:
    """What to do when the link broke at `offset` bytes, the attempt having started at
    `resumed_at` after `stalled` fruitless resumes: resume, or None to give up."""
    if offset > resumed_at:
        return Resume(stalled=0, wait_seconds=0.0)
    if stalled + 1 >= MAX_STALLED_RESUMES:
        return None
    return Resume(stalled=stalled + 1, wait_seconds=STALLED_RESUME_WAIT_SECONDS)


def download_skip(*, status: int, content_range: ContentRange | None, offset: int) -> int | None:
    """Bytes to drop from the start of the answer to a `Range: bytes=offset-` GET so the
    stream continues at `offset`, or None when the answer cannot continue it.

    A 206 must start at `offset`; a 200 is the whole blob again (the server ignored the
    Range), whose first `offset` bytes are dropped."""
    if status == 200:
        return offset
    if status == 206 and content_range is not None and content_range.start == offset:
        return 0
    return None
