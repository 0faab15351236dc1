"""Deadlines by progress: a transfer moving less than a floor rate is cut.

A blob read from a source must bring `floor_rate * window` bytes within each `window` seconds
spent waiting on it; a window that reaches its bytes early starts the next one at once. A read
below the floor is cut and retried as temporary (a 4 KiB blob at 1 byte/s would otherwise hold a
destination slot for an hour), and a source cut SLOW_AFTER_CUTS times in a row is marked slow.
Time is given by the caller (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

# 10 KiB/s over 60 s: far below any link that carries images, and a minute rides out a pause
# (a registry's garbage collection, a TCP retransmit storm) without cutting a healthy read.
DEFAULT_FLOOR_RATE = 10 * 1024
DEFAULT_FLOOR_WINDOW = 60.0
# Cuts in a row (no read from the source at pace in between) before the source is marked slow:
# one cut may be a blip; three are how the source is.
SLOW_AFTER_CUTS = 3


@dataclass(frozen=True, slots=True)
class Floor:
    """The least a read must bring: `rate` bytes per second over each `window` seconds."""

    rate: int = DEFAULT_FLOOR_RATE
    window: float = DEFAULT_FLOOR_WINDOW

    @property
    def window_bytes(self) -> int:
        """Bytes each window must bring."""
        return max(1, int(self.rate * self.window))


class Pace:
    """The current window of one read: the seconds spent waiting on it and what it brought.

    Only the time spent waiting for the source counts: a destination slow to take the bytes
    delays the next read, not the source."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self._waited = 0.0
        self._bytes = 0

    def remaining(self) -> float:
        """Seconds the read may still wait within this window before it is cut."""
        return max(0.0, self.floor.window - self._waited)

    def brought(self, size: int, waited: float) -> None:
        """`size` bytes arrived after waiting `waited` seconds; a window that has its bytes
        starts the next."""
        self._waited += waited
        self._bytes += size
        if self._bytes >= self.floor.window_bytes:
            self._waited = 0.0
            self._bytes = 0

    def short(self) -> bool:
        """Whether the window is over without its bytes (the read is cut)."""
        return self._waited >= self.floor.window

    def shortfall(self) -> str:
        """Why the read is cut."""
        return (
            f"{self._bytes} bytes in {self.floor.window:g} s, below the floor of "
            f"{self.floor.rate} bytes/s"
        )


def is_slow(cuts_in_a_row: int) -> bool:
    """Whether a source cut this many times in a row is slow."""
    return cuts_in_a_row >= SLOW_AFTER_CUTS
