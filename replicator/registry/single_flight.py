"""One call per key in flight; concurrent callers of the same key share its outcome.

As Go's `singleflight`: the token of one (realm, scope) is asked for once however many requests
need it at that moment (Docker Hub and GHCR rate-limit their token endpoints).

    flights: SingleFlight[tuple[str, str], str] = SingleFlight()
    token = await flights.run((realm, scope), lambda: fetch(realm, scope))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Calls in flight by key; not thread-safe (one event loop)."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """`await call()`, unless a call of `key` is in flight: then its result or error.

        A caller cancelled while it waits is cancelled alone; when the caller making the
        call is cancelled, a waiter makes the call again in its place."""
        while (pending := self._flights.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this waiter was cancelled, not the call it waited for
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            value = await call()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._flights[key]
        future.set_result(value)
        return value
