"""Which registries' transfer slots the current task holds.

Kept apart from the client so the retry policy can ask without importing the client: a task
holding a transfer slot must not give its job's destination slot back while it waits (two
transfers could then each hold what the other waits for).
"""

from __future__ import annotations

from contextvars import ContextVar

# Registries a task already holds a request slot on, so nested requests of one transfer (GET from
# the source while uploading to the destination) never wait on a slot their own task holds.
HELD: ContextVar[frozenset[str]] = ContextVar("replicator_held_slots", default=frozenset())


def holds_slot() -> bool:
    """Whether the current task holds a transfer slot on some registry."""
    return bool(HELD.get())
