"""A lease: one holder at a time for a fleet-wide duty, until a moment; the decision alone.

A fleet's members ask for the lease every few seconds (journal/leases.py stores it in the
journal's database, a row locked while it is decided). The holder renews it; when the holder
dies, it expires and the next member to ask takes it, or at once a member that knows the holder
is gone (a process of its own host that no longer runs: domain.fleet.claims.liveness), so a
fleet's events and chores do not wait out a dead member's lease.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a duty, and until when (seconds since the epoch, as time.time() counts)."""

    holder: str
    expires: float

    def held_by(self, holder: str, now: float) -> bool:
        """Whether `holder` holds it at `now`."""
        return self.holder == holder and now < self.expires


def ask(
    current: Lease | None, holder: str, now: float, term: float, *, holder_gone: bool = False
) -> Lease:
    """The lease after `holder` asks for it at `now`: its own for `term` seconds when the lease is
    free, expired, already its own, or its holder is known gone (`holder_gone`); else unchanged
    (another holds it)."""
    if current is None or current.holder == holder or current.expires <= now or holder_gone:
        return Lease(holder, now + term)
    return current


def give_up(current: Lease | None, holder: str) -> bool:
    """Whether `holder` may drop the lease as it stops: only its own."""
    return current is not None and current.holder == holder
