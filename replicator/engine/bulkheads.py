"""Bulkheads: a destination's job slots, held by jobs only while they work.

A destination takes at most `workers.per_registry` working jobs. A job gives its slot back while
it waits — a backoff or a `Retry-After` between tries, a token being fetched (the registry layer
calls `JobSlot.waiting` through the job's context, registry/wait_scope.py) — and queues for one
again when the wait is over. A freed slot goes to the queued job whose source holds the fewest
(domain/destinations/fair_share.py), so throttled or slow sources cannot keep a healthy source's
jobs out. Up to QUEUED_BEYOND_SLOTS claimed jobs per destination wait in its queue beyond the
slots, so a new push is in line when a slot frees.

    slots = DestinationSlots(capacity=lambda: 4, on_release=runner.wake)
    job = slots.ticket("dst", "src")      # at claim time: in the queue at once
    async with job:                        # waits for the grant; released at the end
        with waits_release(job.waiting):   # the job's waits give the slot back
            ...
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType

from replicator.domain.destinations.fair_share import next_grant

# New jobs a destination's queue may hold beyond its slots: one is enough for a new push to be
# in line when a slot frees; more would take workers from other destinations' jobs.
QUEUED_BEYOND_SLOTS = 1


@dataclass(slots=True)
class _Waiter:
    source: str
    new: bool  # a job just claimed, not one coming back from a wait
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DestinationSlots:
    """The job slots of every destination of a process."""

    def __init__(
        self, *, capacity: Callable[[], int], on_release: Callable[[], None] | None = None
    ) -> None:
        self._capacity = capacity  # read at each grant: a reload changes per_registry
        self._on_release = on_release
        self._held: dict[str, Counter[str]] = defaultdict(Counter)
        self._queues: dict[str, list[_Waiter]] = defaultdict(list)

    def held(self, destination: str) -> int:
        """Slots of `destination` held by working jobs."""
        return sum(self._held[destination].values())

    def saturated(self, destination: str) -> bool:
        """Whether `destination` should take no new job now: its slots are held and its
        queue already has QUEUED_BEYOND_SLOTS new jobs."""
        new = sum(1 for waiter in self._queues[destination] if waiter.new)
        return self.held(destination) + new >= self._capacity() + QUEUED_BEYOND_SLOTS

    def ticket(self, destination: str, source: str) -> JobSlot:
        """A job's slot at `destination`, queued for now (call at claim time)."""
        return JobSlot(self, destination, source, self._enqueue(destination, source, new=True))

    def _enqueue(self, destination: str, source: str, *, new: bool) -> _Waiter:
        waiter = _Waiter(source, new)
        self._queues[destination].append(waiter)
        self._grant(destination)
        return waiter

    async def _wait(self, destination: str, waiter: _Waiter) -> None:
        try:
            await asyncio.shield(waiter.granted)
        except asyncio.CancelledError:
            if waiter.granted.done():
                self._release(destination, waiter.source)
            else:
                waiter.granted.cancel()
                self._queues[destination].remove(waiter)
            raise

    def _release(self, destination: str, source: str) -> None:
        held = self._held[destination]
        held[source] -= 1
        if held[source] <= 0:
            del held[source]
        self._grant(destination)
        if self._on_release is not None:
            self._on_release()

    def _grant(self, destination: str) -> None:
        queue = self._queues[destination]
        held = self._held[destination]
        while (index := next_grant(self._capacity(), held, [w.source for w in queue])) is not None:
            waiter = queue.pop(index)
            held[waiter.source] += 1
            waiter.granted.set_result(None)
        if not queue:
            self._queues.pop(destination, None)
        if not held:
            self._held.pop(destination, None)


class JobSlot:
    """One job's slot at its destination: held while the job works, given back while it waits."""

    def __init__(
        self, slots: DestinationSlots, destination: str, source: str, waiter: _Waiter
    ) -> None:
        self._slots = slots
        self.destination = destination
        self.source = source
        self._waiter: _Waiter | None = waiter
        self._held = False
        self._waits = 0  # the job's tasks now waiting (a job copies blobs in parallel)
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> JobSlot:
        assert self._waiter is not None
        waiter, self._waiter = self._waiter, None
        await self._slots._wait(self.destination, waiter)
        self._held = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._give_back()

    def cancel(self) -> None:
        """Leave the queue without ever entering (the job never started)."""
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            if waiter.granted.done():
                self._slots._release(self.destination, waiter.source)
            else:
                waiter.granted.cancel()
                self._slots._queues[self.destination].remove(waiter)

    def _give_back(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self.destination, self.source)

    @asynccontextmanager
    async def waiting(self) -> AsyncIterator[None]:
        """The slot is given back while any task of the job waits, and taken again (queued
        fairly) when the last one is done waiting."""
        async with self._lock:
            self._waits += 1
            if self._waits == 1:
                self._give_back()
        try:
            yield
        except BaseException:
            # Cancelled (a drain, a sibling task's failure): the job is ending, so it does
            # not queue for its slot again.
            self._waits -= 1
            raise
        async with self._lock:
            self._waits -= 1
            if self._waits == 0 and not self._held:
                waiter = self._slots._enqueue(self.destination, self.source, new=False)
                await self._slots._wait(self.destination, waiter)
                self._held = True
