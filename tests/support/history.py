"""A Jepsen-style history checker, first version: a seeded random schedule of writes at the
source registries (pushes, re-pushes of a tag, deletes, pauses while reconcile passes run), the
history of every write as it was made, and the check of every destination tag's final state
against the invariant (ARCHITECTURE, section 9): a tag ends, at every registry it is replicated
to, on its source's newest write — the last image pushed under it, or nothing after a delete.

Each tag has one owner (the registry its writes are made at): in an active-active pair both
registries own tags, so both directions, echoes and reconcile's holds are exercised, while the
newest write of a tag stays well defined (two registries writing one tag at once have no order
to check against).

The schedule and the check are pure; `tests/integration/test_history.py` runs them against
real registries and a daemon.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What one step of a schedule does."""

    PUSH = "push"  # a new image under the tag (a re-push when the tag exists)
    DELETE = "delete"  # delete the manifest the tag names at its owner, as a user would
    PAUSE = "pause"  # let the daemon (and its reconcile passes) run


@dataclass(frozen=True, slots=True)
class Step:
    """One step: at `side`, on `repository:tag`; `seconds` for a pause."""

    kind: Kind
    side: str = ""
    repository: str = ""
    tag: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Write:
    """A write made at a source, in the order made: the digest pushed, or None for a delete."""

    side: str
    repository: str
    tag: str
    digest: str | None


# The odds of each step: mostly pushes (half of them re-pushes of a used tag), some deletes,
# pauses long enough for a reconcile pass to run between writes.
PUSH_WEIGHT, DELETE_WEIGHT, PAUSE_WEIGHT = 6, 2, 2
# Pauses draw from this range: from back to back up to a few reconcile intervals.
PAUSE_RANGE_SECONDS = (0.0, 1.2)


def schedule(
    seed: int, *, length: int, repository: str, tags: int, owners: Sequence[str]
) -> list[Step]:
    """`length` steps on `tags` tags of `repository`, each tag owned by one of `owners` in
    turn; the same seed gives the same schedule."""
    rng = random.Random(seed)
    names = [f"t{i}" for i in range(tags)]
    owner = {name: owners[i % len(owners)] for i, name in enumerate(names)}
    steps: list[Step] = []
    for _ in range(length):
        [kind] = rng.choices(
            [Kind.PUSH, Kind.DELETE, Kind.PAUSE], [PUSH_WEIGHT, DELETE_WEIGHT, PAUSE_WEIGHT]
        )
        if kind is Kind.PAUSE:
            steps.append(Step(kind, seconds=round(rng.uniform(*PAUSE_RANGE_SECONDS), 2)))
            continue
        tag = rng.choice(names)
        steps.append(Step(kind, owner[tag], repository, tag))
    return steps


def expected(history: Sequence[Write]) -> dict[tuple[str, str], str | None]:
    """Per (repository, tag), its source's newest write: the digest, or None (deleted)."""
    final: dict[tuple[str, str], str | None] = {}
    for write in history:
        final[(write.repository, write.tag)] = write.digest
    return final


def violations(
    history: Sequence[Write],
    observed: Mapping[tuple[str, str, str], str | None],
    sides: Sequence[str],
) -> list[str]:
    """Every way the registries' final state (`observed[(side, repository, tag)]`: the digest
    the tag names there, None when absent) breaks the invariant, one line each."""
    found = []
    for (repository, tag), digest in sorted(expected(history).items()):
        for side in sides:
            seen = observed.get((side, repository, tag))
            if seen != digest:
                wanted = digest or "deleted"
                found.append(f"{side} {repository}:{tag} is {seen or 'absent'}, not {wanted}")
    return found
