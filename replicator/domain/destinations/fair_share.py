"""Who gets a destination's freed slot: the waiting job whose source holds the fewest.

A destination has `capacity` slots (`workers.per_registry`) for jobs that are working; a job
waiting (a backoff, a Retry-After) gives its slot back and queues for one when it is done
waiting. When a slot is free, it goes to the first queued job of the source holding the fewest
slots at that destination, so no source keeps more than its share while another's jobs wait:
four jobs of a throttled or slow source cannot keep a healthy source's push out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def next_grant(capacity: int, held: Mapping[str, int], waiting: Sequence[str]) -> int | None:
    """The index in `waiting` (sources, in arrival order) of the job to give a slot now, or
    None when every slot is held or nobody waits."""
    if not waiting or sum(held.values()) >= capacity:
        return None
    fewest = min(held.get(source, 0) for source in waiting)
    return next(i for i, source in enumerate(waiting) if held.get(source, 0) == fewest)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A due job a claim may take: its id and its (destination, source)."""

    id: int
    destination: str
    source: str


def claim_order(
    candidates: Sequence[Candidate], working: Mapping[tuple[str, str], int], limit: int
) -> list[int]:
    """The ids of up to `limit` of `candidates` (oldest due first) to claim, by turns between
    the sources of each destination: a job's turn is its place behind its (destination,
    source)'s `working` jobs and its older candidates; ties go to the older job. A source's
    new push is claimed after about one job of another source's backlog, not behind it."""
    seen: Counter[tuple[str, str]] = Counter()
    turns = []
    for age, candidate in enumerate(candidates):
        pair = (candidate.destination, candidate.source)
        seen[pair] += 1
        turns.append((working.get(pair, 0) + seen[pair], age, candidate.id))
    return [job_id for _, _, job_id in sorted(turns)[:limit]]
