"""The progress line `copy` and `backfill` draw on a terminal: images, bytes, rate, ETA.

`progress_text` is pure (tested from plain values); `drawn` redraws a line on stderr while
a command runs, only when stderr is a terminal: in a pipe or under systemd nothing is drawn,
so logs and captured output carry no carriage returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TextIO

# Redrawn this often: smooth enough to watch, cheap enough not to matter.
REFRESH_SECONDS = 0.2
# No ETA before this much time has passed or this much is done: an early rate is noise.
ETA_MIN_SECONDS = 2.0
MEGABYTE = 1e6


@dataclass(slots=True)
class Progress:
    """What a command has done so far; the copier's observers add to it."""

    images_done: int = 0
    images_total: int | None = None  # None while unknown (a listing not yet read)
    failed: int = 0
    bytes_done: int = 0
    started: float = field(default_factory=time.monotonic)

    def add_bytes(self, _action: str, size: int) -> None:
        """A blob step (the copier's on_blob observer)."""
        self.bytes_done += size

    def plan(self, images: int) -> None:
        """More images are known to be coming (a repository's tags were listed)."""
        self.images_total = (self.images_total or 0) + images

    def image_done(self, *, failed: bool = False) -> None:
        """One image is copied (or failed)."""
        self.images_done += 1
        if failed:
            self.failed += 1

    def text(self, now: float | None = None) -> str:
        """The line for this moment."""
        elapsed = (now if now is not None else time.monotonic()) - self.started
        return progress_text(
            images_done=self.images_done, images_total=self.images_total, failed=self.failed,
            bytes_done=self.bytes_done, elapsed=elapsed,
        )  # fmt: skip


def eta_seconds(done: int, total: int | None, elapsed: float) -> float | None:
    """Seconds left at the average pace so far, or None when it cannot be told yet."""
    if total is None:
        return None
    if done >= total:
        return 0.0
    if done <= 0 or elapsed < ETA_MIN_SECONDS:
        return None
    return elapsed / done * (total - done)


def clock(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(
    *, images_done: int, images_total: int | None, failed: int, bytes_done: int, elapsed: float
) -> str:
    """`3/10 images (1 failed), 12.5 MB, 4.2 MB/s, ETA 0:07`."""
    of = f"/{images_total}" if images_total is not None else ""
    failures = f" ({failed} failed)" if failed else ""
    rate = bytes_done / elapsed / MEGABYTE if elapsed > 0 else 0.0
    eta = eta_seconds(images_done, images_total, elapsed)
    return (
        f"{images_done}{of} images{failures}, {bytes_done / MEGABYTE:.1f} MB, "
        f"{rate:.1f} MB/s, ETA {clock(eta) if eta is not None else '?'}"
    )


@contextlib.asynccontextmanager
async def drawn(line: Callable[[], str], out: TextIO) -> AsyncIterator[None]:
    """Redraw `line()` on `out` while the body runs, when `out` is a terminal; the last line
    stays on screen. Elsewhere nothing at all is written."""
    if not out.isatty():
        yield
        return

    async def redraw() -> None:
        while True:
            out.write(f"\r{line()}\x1b[K")
            out.flush()
            await asyncio.sleep(REFRESH_SECONDS)

    task = asyncio.create_task(redraw(), name="progress")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        out.write(f"\r{line()}\x1b[K\n")
        out.flush()
