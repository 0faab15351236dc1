"""The daemon's writes at destinations, journalled just before they are made (own_writes), so
the events the registries send about them are known for echoes (domain/events/echoes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from replicator.domain.events.echoes import Write, WriteAction
from replicator.domain.routing import Site
from replicator.engine.endpoint import AnnounceWrites


class WriteLog(Protocol):
    """Where writes are recorded (the journal, or a backfill's ledger in front of it)."""

    async def record_writes(self, writes: Sequence[Write]) -> None: ...


def announcer(log: WriteLog, target: Site) -> AnnounceWrites | None:
    """What an Endpoint at `target` tells of its writes: each recorded in `log` before it is
    made (a journal error fails the attempt, which is retried, before anything is written).
    None when `target` replicates nowhere: its events make no job, so no echo needs knowing,
    and a one-way pair pays no journal write for it."""
    if not target.replication.rules:
        return None
    registry = target.name

    async def announce(
        action: WriteAction, repository: str, refs: Sequence[tuple[str, str | None]]
    ) -> None:
        await log.record_writes(
            [Write(registry, repository, action, digest, tag) for digest, tag in refs]
        )

    return announce
