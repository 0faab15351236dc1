"""Who holds an IN_PROGRESS job, and whether that holder is gone: pure decisions on claimer ids.

A claim records its process as `<host>/<place>/<pid>/<process start>`, the place naming the
machine and pid namespace (journal/claimers.py gathers them). A process can tell for sure that a
claimer is dead only when the claimer ran in its own place: then the pid either runs no process
or one started at another moment (the pid was reused, or the machine rebooted). Claimers
elsewhere (another host of a fleet, another container) are unknown here; their jobs become
orphans only by age ([workers] orphan_after).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Separates the parts of a claimer id; host names and namespace ids never contain it.
SEPARATOR = "/"


@dataclass(frozen=True, slots=True)
class Claimer:
    """A process that claims jobs."""

    host: str
    namespace: str  # machine and pid namespace ("" parts where the system has none to tell)
    pid: int
    start: str  # when the process started, in the system's own units

    def __str__(self) -> str:
        return SEPARATOR.join((self.host, self.namespace, str(self.pid), self.start))

    def same_place(self, other: Claimer) -> bool:
        """Whether `other` ran on this machine and pid namespace (so its pid can be looked up)."""
        return (self.host, self.namespace) == (other.host, other.namespace)


def parse_claimer(text: str) -> Claimer | None:
    """The claimer a stored id names; None for anything else (an older or foreign value)."""
    parts = text.split(SEPARATOR)
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    host, namespace, pid, start = parts
    return Claimer(host, namespace, int(pid), start)


def local_pids(claimers: Iterable[str | None], here: Claimer) -> set[int]:
    """The pids to look up: those of claimers that ran where `here` runs."""
    parsed = (parse_claimer(text) for text in claimers if text)
    return {c.pid for c in parsed if c is not None and c.same_place(here)}


@dataclass(frozen=True, slots=True)
class Liveness:
    """Claimers sorted by what this process knows of them."""

    alive: frozenset[str]
    dead: frozenset[str]


def liveness(
    claimers: Iterable[str | None], here: Claimer, starts: Mapping[int, str | None]
) -> Liveness:
    """Which `claimers` run and which are gone, from the start of each local pid (`starts`,
    None for a pid running nothing); claimers elsewhere are in neither set."""
    alive: set[str] = set()
    dead: set[str] = set()
    for text in claimers:
        claimer = parse_claimer(text) if text else None
        if claimer is None or not claimer.same_place(here):
            continue
        running = starts.get(claimer.pid)
        (alive if running is not None and running == claimer.start else dead).add(text or "")
    return Liveness(frozenset(alive), frozenset(dead))
