"""A Jepsen-style history checker: a seeded random schedule of what users and failures do to a
replication setup, the history of every write made at the sources, and the judgement of the
registries' final state against the invariant (ARCHITECTURE, section 9):

- a destination tag ends on the source's newest write of that tag (the last image pushed under
  it, or nothing after a delete);
- a deleted manifest stays deleted unless the source pushed it again;

and, for the record, each push's time to replication.

Each tag has one owner (the registry its writes are made at): in an active-active pair both
registries own tags, so both directions, echoes and reconcile's holds are exercised, while the
newest write of a tag stays well defined (two registries writing one tag at once have no order
to check against). Faults (daemon kills, destination outages, reconcile passes, broker
restarts, wipes of a registry that owns no tag) hit everything.

Everything here is pure: `tests/support/history_run.py` makes the schedule happen against real
registries, a broker, the bridge and a daemon, and reads back what `judge()` needs.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """What one step of a schedule does."""

    PUSH = "push"  # a new image under the tag (a re-push when the tag exists)
    RESTORE = "restore"  # push again the image the tag's last delete removed (same digest)
    DELETE = "delete"  # delete, by digest, the manifest the tag names at its owner
    PAUSE = "pause"  # let the daemon (and its reconcile passes) run
    RECONCILE = "reconcile"  # a reconcile pass from the command line (`replicator backfill`)
    KILL = "kill"  # SIGKILL the daemon and start it again
    OUTAGE = "outage"  # stop a registry (its storage stays)
    RETURN = "return"  # start it again on the same port and storage
    BROKER = "broker"  # restart the broker (its persistence kept)
    WIPE = "wipe"  # restart a registry on empty storage (a restore, a GC); never a tag's owner


WRITES = frozenset({Kind.PUSH, Kind.RESTORE, Kind.DELETE})


@dataclass(frozen=True, slots=True)
class Step:
    """One step: at `side`, on `repository:tag`; `seconds` for a pause."""

    kind: Kind
    side: str = ""
    repository: str = ""
    tag: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.kind is Kind.PAUSE:
            return f"pause {self.seconds}s"
        if self.kind in WRITES:
            return f"{self.kind} {self.side} {self.repository}:{self.tag}"
        return f"{self.kind} {self.side}".rstrip()


@dataclass(frozen=True, slots=True)
class Write:
    """A write made at a source, in the order made: a push of `digest` under the tag, or the
    delete (by digest) of `digest`, which took the tag with it; `at` in seconds since the epoch,
    once the registry answered."""

    side: str
    repository: str
    tag: str
    digest: str
    deleted: bool = False
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Arrival:
    """A replica written: the daemon's job put `digest` under the tag at `side` at `at`."""

    side: str
    repository: str
    tag: str
    digest: str
    at: float


@dataclass(frozen=True, slots=True)
class Observed:
    """The registries' final state: the digest each tag names there (None: no such tag), and
    whether each deleted manifest is still served by digest."""

    tags: Mapping[tuple[str, str, str], str | None]  # (side, repository, tag)
    manifests: Mapping[tuple[str, str, str], bool]  # (side, repository, digest)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the checker found: each broken rule one line; each push's time to replication at
    each of its destinations; pushes whose tag moved on before any replica landed."""

    violations: list[str]
    latencies: list[float] = field(default_factory=list)
    overtaken: int = 0


@dataclass(frozen=True, slots=True)
class Odds:
    """The weight of each step kind in a schedule, and how long pauses and outages are."""

    push: int = 6
    restore: int = 1
    delete: int = 2
    pause: int = 2
    reconcile: int = 1
    kill: int = 1
    outage: int = 1
    # Off unless asked (the suite's seeds keep their schedules): a draw of weight 0 at the end
    # of the list changes nothing of the others.
    broker: int = 0
    wipe: int = 0
    # Pauses from back to back up to a few reconcile intervals.
    pause_seconds: tuple[float, float] = (0.0, 1.5)
    # An outage lasts this many of the following steps (writes elsewhere go on meanwhile).
    outage_steps: tuple[int, int] = (1, 4)


# The odds every schedule uses unless told otherwise.
DEFAULT_ODDS = Odds()


def schedule(
    seed: int,
    *,
    length: int,
    repository: str,
    tags: int,
    owners: Sequence[str],
    routes: Mapping[str, Sequence[str]],
    odds: Odds = DEFAULT_ODDS,
) -> list[Step]:
    """`length` steps on `tags` tags of `repository`, each tag owned by one of `owners` in turn;
    outages hit registries that are replicated to (`routes`' destinations) and end within the
    schedule. The same seed gives the same schedule."""
    rng = random.Random(seed)
    names = [f"t{i}" for i in range(tags)]
    owner = {name: owners[i % len(owners)] for i, name in enumerate(names)}
    targets = sorted({d for dests in routes.values() for d in dests})
    # A wipe of a registry that owns tags would lose writes no daemon could bring back.
    wipeable = [side for side in targets if side not in owners]
    present = dict.fromkeys(names, False)  # the tag names an image at its owner
    restorable = dict.fromkeys(names, False)  # the tag's last write was a delete
    down: dict[str, int] = {}  # registry -> steps left until it returns
    steps: list[Step] = []
    kinds = list(Kind)
    weights = [getattr(odds, kind.value, 0) for kind in kinds]  # RETURN: after an outage only
    while len(steps) < length:
        for side, left in sorted(down.items()):
            if left <= 0:
                steps.append(Step(Kind.RETURN, side))
                del down[side]
            else:
                down[side] = left - 1
        [kind] = rng.choices(kinds, weights)
        if kind is Kind.PAUSE:
            steps.append(Step(kind, seconds=round(rng.uniform(*odds.pause_seconds), 2)))
        elif kind in (Kind.RECONCILE, Kind.KILL, Kind.BROKER):
            steps.append(Step(kind))
        elif kind is Kind.WIPE:
            if wipeable and not down:
                steps.append(Step(kind, rng.choice(wipeable)))
        elif kind is Kind.OUTAGE:
            up = [side for side in targets if side not in down]
            if up and not down:  # one registry down at a time: the pair's other side answers
                side = rng.choice(up)
                down[side] = rng.randint(*odds.outage_steps)
                steps.append(Step(kind, side))
        else:
            writable = [t for t in names if owner[t] not in down]
            if kind is Kind.DELETE:
                writable = [t for t in writable if present[t]]
            elif kind is Kind.RESTORE:
                writable = [t for t in writable if restorable[t]]
            if writable:
                tag = rng.choice(writable)
                steps.append(Step(kind, owner[tag], repository, tag))
                present[tag] = kind is not Kind.DELETE
                restorable[tag] = kind is Kind.DELETE
    steps.extend(Step(Kind.RETURN, side) for side in sorted(down))
    return steps


def expected(history: Sequence[Write]) -> dict[tuple[str, str], Write]:
    """Per (repository, tag), its source's newest write."""
    return {(write.repository, write.tag): write for write in history}


def _describe(history: Sequence[Write], repository: str, tag: str, digest: str | None) -> str:
    """Which write of the tag a digest seen at a registry is, for a violation's line."""
    if digest is None:
        return "absent"
    for index, write in enumerate(history):
        if (write.repository, write.tag, write.digest, write.deleted) == (
            repository, tag, digest, False,
        ):  # fmt: skip
            return f"{digest[:19]} (write #{index}, an older push)"
    return f"{digest[:19]} (no write of this tag)"


def judge(
    history: Sequence[Write],
    observed: Observed,
    routes: Mapping[str, Sequence[str]],
    arrivals: Sequence[Arrival] = (),
) -> Verdict:
    """Check the final state against the invariant: every tag, at its owner and every registry
    its owner replicates to (`routes`), names its newest write's image, or nothing after a
    delete; a manifest deleted and not pushed again is served nowhere it should be gone from.
    Each push's time to replication is its first replica landed after it (`arrivals`)."""
    found: list[str] = []
    for (repository, tag), last in sorted(expected(history).items()):
        index = len(history) - 1 - list(reversed(history)).index(last)
        want = None if last.deleted else last.digest
        for side in (last.side, *routes.get(last.side, ())):
            seen = observed.tags.get((side, repository, tag))
            if seen != want:
                what = f"deleted {last.digest[:19]}" if last.deleted else last.digest[:19]
                found.append(
                    f"{side} {repository}:{tag} is {_describe(history, repository, tag, seen)},"
                    f" not write #{index} ({what} at {last.side})"
                )
    for index, write in enumerate(history):
        if not write.deleted:
            continue
        later = history[index + 1 :]
        if any(w.repository == write.repository and w.digest == write.digest for w in later):
            continue  # pushed again (or deleted again: that delete is checked itself)
        for side in (write.side, *routes.get(write.side, ())):
            if observed.manifests.get((side, write.repository, write.digest), False):
                found.append(
                    f"{side} {write.repository}@{write.digest[:19]} is served again after"
                    f" write #{index} deleted it at {write.side}"
                )
    latencies, overtaken = _times_to_replication(history, routes, arrivals)
    return Verdict(found, latencies, overtaken)


def _times_to_replication(
    history: Sequence[Write], routes: Mapping[str, Sequence[str]], arrivals: Sequence[Arrival]
) -> tuple[list[float], int]:
    """Per push and destination, seconds until the first replica of it landed after it; the
    count of pushes whose tag was written again before any replica landed (not a fault: the
    newer write is what must arrive)."""
    latencies: list[float] = []
    overtaken = 0
    for index, write in enumerate(history):
        if write.deleted:
            continue
        for side in routes.get(write.side, ()):
            landed = [
                a.at
                for a in arrivals
                if (a.side, a.repository, a.tag, a.digest)
                == (side, write.repository, write.tag, write.digest)
                and a.at >= write.at
            ]
            if landed:
                latencies.append(min(landed) - write.at)
            elif any(
                (w.repository, w.tag) == (write.repository, write.tag) for w in history[index + 1 :]
            ):
                overtaken += 1
    return latencies, overtaken


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile of `values` (nearest rank); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def summary(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p95 and max of times to replication, in seconds, two decimals."""
    return {
        "p50": round(statistics.median(latencies), 2) if latencies else 0.0,
        "p95": round(percentile(latencies, 0.95), 2),
        "max": round(max(latencies, default=0.0), 2),
    }
