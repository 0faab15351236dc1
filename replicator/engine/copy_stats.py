"""What a copy reports: counts of what was done, the result of one image, a failure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class CopyStats:
    """What a copy did, summed over images."""

    images: int = 0
    manifests: int = 0
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0

    def add(self, other: CopyStats) -> None:
        """Add `other` into this one."""
        self.images += other.images
        self.manifests += other.manifests
        self.blobs_copied += other.blobs_copied
        self.blobs_mounted += other.blobs_mounted
        self.blobs_skipped += other.blobs_skipped
        self.bytes_copied += other.bytes_copied


@dataclass(frozen=True, slots=True)
class CopyResult:
    """One image copied: its digest, what was done, the manifests its index lists (which
    the daemon's jobs for those children no longer need to copy), and, when the source had
    moved on since the job's event, how (the tag left alone, or a delete left undone)."""

    digest: str
    stats: CopyStats
    children: tuple[str, ...] = ()
    superseded: str | None = None


@dataclass(frozen=True, slots=True)
class CopyFailure:
    """An image that could not be copied, with the error's code and message."""

    image: str
    code: str
    reason: str


class ImageObserver(Protocol):
    """Told how many images a repository copy will do and of each one done (progress lines)."""

    def plan(self, images: int) -> None:
        """`images` more images are coming (a repository's tags were listed)."""

    def image_done(self, *, failed: bool = False) -> None:
        """One image was copied, or failed."""
