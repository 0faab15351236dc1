"""Run awaitables together, fail fast: the first error cancels the rest and is raised as is;
and work through a stream of repository names a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K")
# Repositories worked on at once (a scan, a verify, `copy -r`); requests are bounded further by
# each registry's own limit (workers.per_registry), so this only has to keep those slots busy.
REPOSITORIES_IN_FLIGHT = 16


async def gather_all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Run awaitables concurrently; on the first failure cancel the rest and raise it."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_as_coroutine(aw)) for aw in aws]
    except BaseExceptionGroup as group_error:
        raise _first(group_error) from None
    return [task.result() for task in tasks]


async def map_bounded(
    work: Callable[[K], Awaitable[T]], items: Sequence[K], in_flight: int
) -> list[T]:
    """`work(item)` of every item, at most `in_flight` at once, the results in the items' order;
    on the first failure cancel the rest and raise it (as gather_all)."""
    results: list[T | None] = [None] * len(items)
    ahead = iter(enumerate(items))

    async def worker() -> None:
        for index, item in ahead:
            results[index] = await work(item)

    async with task_group() as group:
        for _ in range(min(in_flight, len(items))):
            group.create_task(worker())
    return results  # type: ignore[return-value]  # every place was filled


async def _as_coroutine(aw: Awaitable[T]) -> T:
    return await aw


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf error of a (possibly nested) exception group."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An asyncio.TaskGroup whose first failure is raised as itself, not in an ExceptionGroup
    (our typed errors stay catchable with a plain `except`)."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as group_error:
        raise _first(group_error) from None


async def for_each_repository(
    names: AsyncIterator[str],
    work: Callable[[str], Awaitable[None]],
    *,
    stop: asyncio.Event | None = None,
    in_flight: int = REPOSITORIES_IN_FLIGHT,
) -> None:
    """Call `work` for every name, `in_flight` at a time, reading the names lazily (a catalog of
    any size costs bounded memory)."""
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=in_flight * 2)

    async def worker() -> None:
        while (name := await queue.get()) is not None:
            if stop is None or not stop.is_set():
                await work(name)

    async with task_group() as group:
        for _ in range(in_flight):
            group.create_task(worker())
        try:
            async for name in names:
                if stop is not None and stop.is_set():
                    break
                await queue.put(name)
        finally:
            for _ in range(in_flight):
                await queue.put(None)


async def unless_set(event: asyncio.Event | None, aw: Awaitable[T]) -> T | None:
    """`await aw`, or None as soon as `event` is set (`aw` is then cancelled): a scan stops in
    the middle of a page of a thousand HEADs, not after it."""
    if event is None:
        return await aw
    if event.is_set():
        if asyncio.iscoroutine(aw):
            aw.close()
        return None
    work = asyncio.ensure_future(aw)
    stopped = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait([work])
    return None if work.cancelled() else work.result()


class Once(Generic[K, T]):
    """One task per key: whoever asks for a key again shares its first task, running or done
    (a check that many tags or images share is made once)."""

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Future[T]] = {}

    def __call__(self, key: K, start: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """The task of `key`, started with `start()` if it is the first ask."""
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = asyncio.ensure_future(start())
        return task
