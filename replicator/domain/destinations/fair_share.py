"""Who gets a destination's freed slot: the waiting job whose source holds the fewest.

A destination has `capacity` slots (`workers.per_registry`) for jobs that are working; a job
waiting (a backoff, a Retry-After) gives its slot back and queues for one when it is done
waiting. When a slot is free, it goes to the first queued job of the source holding the fewest
slots at that destination, so no source keeps more than its share while another's jobs wait:
four jobs of a throttled or slow source cannot keep a healthy source's push out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def next_grant(capacity: int, held: Mapping[str, int], waiting: Sequence[str]) -> int | None:
    """The index in `waiting` (sources, in arrival order) of the job to give a slot now, or
    None when every slot is held or nobody waits."""
    if not waiting or sum(held.values()) >= capacity:
        return None
    fewest = min(held.get(source, 0) for source in waiting)
    return next(i for i, source in enumerate(waiting) if held.get(source, 0) == fewest)
