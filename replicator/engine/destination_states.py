"""Destinations with a state: reachable, or unreachable since T (domain/destinations decides).

The runner tells it how each job's attempt went at its destination; a probe loop asks each
unreachable destination, one request at a time, whether it answers again (GET /v2/): once a
second, less often for one whose returns do not hold (domain.destinations.probe_pace). On each
change it warns once, tells the observer (the daemon's gauge), records the fact in the journal
(so `status` and every process of a fleet see it) and, when a destination is back, releases all
its waiting jobs at once and gives its temporarily FAILED jobs a new chance.

    states = DestinationStates(journal, clients=lambda name: pool_client(name))
    await states.signal("usw2", Signal.UNANSWERED, error="connection refused")
    states.unreachable()  # {"usw2": since}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from replicator.domain.destinations import (
    PROBE_SECONDS,
    Action,
    Reachability,
    Signal,
    asks_probe,
    counts_attempt,
    is_outage,
    probe_answered,
    probe_pace,
    transition,
)
from replicator.engine.pauses import sleep_until
from replicator.errors import JournalError, RegistryError, ReplicatorError
from replicator.logs import get_logger
from replicator.registry.client import RegistryClient

log = get_logger(__name__)

# A probe that gets no answer within this is a failed probe: a registry that answers /v2/
# slower than this cannot take jobs either.
PROBE_TIMEOUT_SECONDS = 5.0


class OutageJournal(Protocol):
    """What the states need of the journal."""

    async def release(self, destination: str, now: datetime) -> tuple[int, int]: ...

    async def set_unreachable(self, destination: str, since: datetime | None) -> None: ...

    async def unreachable(self) -> dict[str, datetime]: ...


# (destination, reachable): the daemon's gauge.
ReachabilityObserver = Callable[[str, bool], None]


class DestinationStates:
    """Reachability per destination (reachable until a job says otherwise)."""

    def __init__(
        self,
        journal: OutageJournal,
        *,
        clients: Callable[[str], RegistryClient | None],
        on_change: ReachabilityObserver | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._journal = journal
        self._clients = clients
        self._on_change = on_change
        self._on_release = on_release
        self._states: dict[str, Reachability] = {}
        self._since: dict[str, datetime] = {}
        # Per destination: seconds between its probes, when the next is due and when it last
        # came back (time.monotonic()), for domain.destinations.probe_pace.
        self._pace: dict[str, float] = {}
        self._next_probe: dict[str, float] = {}
        self._returned: dict[str, float] = {}
        # Set when a destination becomes unreachable: the probe loop starts at once.
        self._lost = asyncio.Event()

    def state(self, destination: str) -> Reachability:
        """What is known of `destination`: REACHABLE until a job finds it not answering."""
        return self._states.get(destination, Reachability.REACHABLE)

    def unreachable(self) -> dict[str, datetime]:
        """The destinations not answering, with when each stopped."""
        return dict(self._since)

    async def attempt_failed(
        self, destination: str, error: ReplicatorError, *, destination_host: str | None
    ) -> bool:
        """A job's attempt at `destination` failed with `error`: signal an outage of it (when
        the error says so, domain.destinations.is_outage, and for a 5xx answer a probe agrees,
        asks_probe); whether the attempt counts against the job (not when the destination was
        already known unreachable)."""
        status = getattr(error, "status", None)
        outage = is_outage(
            status=status,
            temporary=error.temporary,
            at_destination=destination_host is not None
            and getattr(error, "host", None) == destination_host,
        )
        if outage and asks_probe(status=status, state=self.state(destination)):
            outage = await self._probe(destination) is Signal.PROBE_FAILED
            if not outage:
                log.info("destination_answers", destination=destination, error=str(error))
        counted = counts_attempt(self.state(destination), outage=outage)
        if outage:
            await self.signal(destination, Signal.UNANSWERED, error=str(error))
        return counted

    async def signal(self, destination: str, signal: Signal, *, error: str = "") -> None:
        """Apply what was learnt of `destination`; on a change warn, record and (when it is
        back) release its jobs. Never raises for the journal: a change it could not record is
        logged, and the jobs are released by the next change or by their own backoff."""
        was = self.state(destination)
        change = transition(was, signal)
        # Set before any await: a second job failing meanwhile sees the new state.
        self._states[destination] = change.state
        now = datetime.now(UTC)
        if change.action is Action.HOLD:
            self._since[destination] = now
            back = self._returned.get(destination)
            pace = probe_pace(
                self._pace.get(destination, PROBE_SECONDS),
                since_return=None if back is None else time.monotonic() - back,
            )
            self._pace[destination] = pace
            self._next_probe[destination] = time.monotonic() + pace
            log.warning(
                "destination_unreachable",
                destination=destination,
                since=now.isoformat(),
                error=error,
                probe_seconds=pace,
            )
            self._tell(destination, reachable=False)
            self._lost.set()
            await self._record(destination, now)
        elif change.action is Action.RELEASE:
            since = self._since.pop(destination, now)
            self._returned[destination] = time.monotonic()
            log.warning(
                "destination_reachable",
                destination=destination,
                unreachable_seconds=round((now - since).total_seconds(), 1),
                seen_by=signal.value.lower(),
            )
            self._tell(destination, reachable=True)
            await self._release(destination, now)

    async def probe_forever(self, stop: asyncio.Event) -> None:
        """Probe each unreachable destination, one request at a time, until `stop`; first
        take up the outages the journal records (this process restarted during one, or a
        member of the fleet died in one): probed like ours, released and cleared when over."""
        await self._restore()
        while not stop.is_set():
            for destination in list(self._since):
                if time.monotonic() < self._next_probe.get(destination, 0.0):
                    continue
                await self.signal(destination, await self._probe(destination))
                pace = self._pace.get(destination, PROBE_SECONDS)
                self._next_probe[destination] = time.monotonic() + pace
            self._lost.clear()
            if not self._since:
                await sleep_until(None, stop, self._lost)
                continue
            due = min(self._next_probe.get(d, 0.0) for d in self._since) - time.monotonic()
            await sleep_until(max(0.05, min(due, PROBE_SECONDS)), stop)

    async def _restore(self) -> None:
        try:
            recorded = await self._journal.unreachable()
        except JournalError as exc:
            log.warning("destination_states_unreadable", error=str(exc))
            return
        for destination, since in recorded.items():
            if self.state(destination) is Reachability.UNREACHABLE:
                continue
            self._states[destination] = Reachability.UNREACHABLE
            self._since[destination] = since
            self._tell(destination, reachable=False)
            log.warning(
                "destination_unreachable",
                destination=destination,
                since=since.isoformat(),
                error="recorded in the journal",
            )

    async def _probe(self, destination: str) -> Signal:
        """GET /v2/ once: PROBE_ANSWERED on any answer below 500 (200, or 401 asking for
        credentials), else PROBE_FAILED."""
        client = self._clients(destination)
        if client is None:  # no longer in the config: nothing waits for it
            return Signal.PROBE_ANSWERED
        status: int | None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                # One try: the probe's pace (domain/destinations.probe_pace) is its retry.
                response = await client.request(
                    "GET", "/v2/", scope="", expected=(200, 401), retry=False
                )
            status = response.status_code
        except RegistryError as exc:
            status = exc.status
        except TimeoutError:
            status = None
        return probe_answered(status)

    def _tell(self, destination: str, *, reachable: bool) -> None:
        if self._on_change is not None:
            self._on_change(destination, reachable)

    async def _record(self, destination: str, since: datetime | None) -> None:
        try:
            await self._journal.set_unreachable(destination, since)
        except JournalError as exc:
            log.error("journal_unwritable", error=str(exc), step="destination_state")  # noqa: TRY400 - the message is the point

    async def _release(self, destination: str, now: datetime) -> None:
        try:
            released, retried = await self._journal.release(destination, now)
        except JournalError as exc:
            log.error("journal_unwritable", error=str(exc), step="release")  # noqa: TRY400 - the message is the point
            released = retried = 0
        await self._record(destination, None)
        log.info(
            "destination_jobs_released",
            destination=destination,
            waiting=released,
            failed_retried=retried,
        )
        if self._on_release is not None:
            self._on_release()
