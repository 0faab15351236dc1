"""What a task's waits are spent in: the engine sets a scope per job, so that a job waiting —
a backoff or a `Retry-After` between tries (registry/retry.py), a token being fetched or
credentials asked of their source, a credential helper say (registry/auth.py) — gives its
destination slot back (engine/bulkheads.py).

A task holding a registry's transfer slot waits holding everything: a destination slot given
back while a transfer slot is held could deadlock two transfers (each holding what the other
waits for), so such a wait keeps both.

    with waits_release(job_slot.waiting):     # the engine, around a job's work
        ...
        async with waiting():                  # the registry layer, around a wait
            await asyncio.sleep(seconds)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar

from replicator.registry.held_slots import holds_slot

# What a wait is spent in; None (outside a job): a wait holds whatever its task holds.
WaitScope = Callable[[], AbstractAsyncContextManager[None]]
_WAIT_SCOPE: ContextVar[WaitScope | None] = ContextVar("replicator_wait_scope", default=None)


@contextmanager
def waits_release(scope: WaitScope) -> Iterator[None]:
    """Spend the waits of this task (and the tasks it starts) within `scope`."""
    token = _WAIT_SCOPE.set(scope)
    try:
        yield
    finally:
        _WAIT_SCOPE.reset(token)


@asynccontextmanager
async def waiting() -> AsyncIterator[None]:
    """A wait: within the task's wait scope, unless the task holds a transfer slot."""
    scope = _WAIT_SCOPE.get()
    if scope is None or holds_slot():
        yield
        return
    async with scope():
        yield
