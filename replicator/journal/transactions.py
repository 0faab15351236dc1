"""The journal's transactions: blocking database calls on ONE worker thread per journal (a
single-thread executor), never on the event loop, one transaction per call.

One thread means one connection in use at a time: SQLite allows one writer, so serialising
in-process costs nothing and spares our own tasks lock waits; other processes sharing the file
are serialised by SQLite's lock (BEGIN IMMEDIATE + busy_timeout, see schema.py), and on
PostgreSQL by row locks. The Journal (store.py) is this plus its methods by concept
(job_store.py, intake_store.py, fleet_store.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlmodel import Session

from replicator.errors import JournalError
from replicator.journal.schema import redacted

T = TypeVar("T")
# Rows `jobs()` and `events()` return by default: a few screens, as `replicator jobs` shows them.
DEFAULT_LIST_LIMIT = 100


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


class Transactions:
    """A database engine worked from one thread, a transaction per call; the base of the
    Journal's parts."""

    def __init__(self, engine: Engine, url: str, *, claimer: str) -> None:
        self._engine = engine
        self._url = url
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._closed = False
        # Recorded on the jobs this process claims (the caller's claimers.this_process()).
        self.claimer = claimer

    @property
    def dialect(self) -> str:
        """The database kind: "sqlite", "postgresql", ..."""
        return self._engine.dialect.name

    async def close(self) -> None:
        """Release the connections and the worker thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._call(self._engine.dispose)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    def _transact(self, work: Callable[[Session], T]) -> T:
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                return work(session)
        except SQLAlchemyError as exc:
            detail = exc.orig if isinstance(exc, DBAPIError) else exc
            # The database refused these values (a constraint, a value it cannot hold): trying
            # the same write again fails the same way. Anything else (locked, full, away) may
            # pass later.
            refused = isinstance(exc, IntegrityError | DataError)
            raise JournalError(
                f"journal {redacted(self._url)}: {detail}", temporary=not refused
            ) from exc

    async def _run(self, work: Callable[[Session], T]) -> T:
        if self._closed:
            raise JournalError("the journal is closed", temporary=False)
        return await self._call(self._transact, work)
