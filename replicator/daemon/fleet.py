"""A member's roles in a fleet, each a lease in the journal's database held by one member at a
time: the group's intake (`intake:<group>`: the fleet's events through its one durable MQTT
session) and the journal's chores (`chores`: the journal's gauges, pruning, the sweep of
orphans by age, reconcile), one for every group sharing the journal.

A lease lives in the journal's database (journal/leases.py). The holder renews it every
RENEW_SECONDS; a member that cannot renew it gives its duty up before it could expire, so two
members never hold it at once; when the holder dies, the lease expires after LEASE_SECONDS and
the next member to ask takes it (the intake with the session's client id, so the events the
broker queued for that session follow it). A member that knows the holder dead (a process of
its own host that no longer runs, as journal/claimers.py tells: another member on that host,
or the dead one restarted by systemd) takes the lease at its next question instead, so events
queued at the broker for a dead holder's session wait seconds less. A daemon alone (no
`[mqtt] shared_group`) holds every duty without asking. Several groups (each its own sources'
events topic) on one journal split a busy intake, which one member records at the rate of one
journal connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from replicator.daemon.bus import Bus, BusOptions
from replicator.engine.pauses import sleep_until
from replicator.errors import JournalError
from replicator.journal.claimers import claimer_liveness
from replicator.journal.store import Journal
from replicator.logs import get_logger

log = get_logger(__name__)

# The lease of the journal's chores, one for every group on the journal.
CHORES_LEASE = "chores"
# A dead holder's duties pass on after at most this long: with the renewals' period and the
# intake session's reconnect, a member's death delays an event well under 15 s (the issue's
# bound), while a holder renewing every RENEW_SECONDS misses three renewals before losing it.
LEASE_SECONDS = 6.0
# How often the holder renews the lease and the others ask for it.
RENEW_SECONDS = 1.5
# The holder gives its duties up this long before its lease could expire when it could not
# renew (the database away or slow): the next holder never overlaps it, whatever the clocks'
# drift within this margin.
GIVE_UP_MARGIN_SECONDS = 1.5


def intake_client_id(group: str) -> str:
    """The MQTT client id of a fleet's one intake session: the same for every member."""
    return f"{group}-intake"


def intake_lease(group: str) -> str:
    """The lease of a group's intake session."""
    return f"intake:{group}"


class FleetRole:
    """Whether this member holds the lease `name`; `keep()` asks for it and renews it."""

    def __init__(self, journal: Journal, name: str, *, alone: bool) -> None:
        self._journal = journal
        self.name = name
        self.alone = alone
        # Set while the member holds the lease, and its opposite; both waited on.
        self.leading = asyncio.Event()
        self.following = asyncio.Event()
        if alone:
            self.leading.set()
        else:
            self.following.set()
        self._held_until = 0.0  # monotonic: when our duties end unless renewed
        # Whether the fleet had a holder before ours: then the intake session should exist at
        # the broker when we connect it (see Bus's expect_session).
        self.succeeded = False
        # The holder last found dead by this member's question (then the lease was taken at once).
        self._dead_holder: str | None = None

    def holds(self) -> bool:
        """Whether this member does the fleet-wide work now."""
        return self.leading.is_set()

    async def keep(self, stop: asyncio.Event) -> None:
        """Ask for the lease every RENEW_SECONDS until `stop`; release it then if held."""
        if self.alone:
            return
        try:
            while not stop.is_set():
                await self._ask()
                # A holder asks again at the latest when its duty would end unrenewed, so it
                # gives the duty up then, not a renewal period later.
                wait = RENEW_SECONDS
                if self.holds():
                    wait = min(wait, max(self._held_until - time.monotonic(), 0.0))
                await sleep_until(wait, stop)
        finally:
            if self.holds():
                self._follow("stopping")
                with contextlib.suppress(JournalError):
                    await self._journal.release_lease(self.name)

    async def _ask(self) -> None:
        asked = time.monotonic()
        # A holder waits for its renewal no longer than its duties last.
        within = max(self._held_until - asked, 0.0) if self.holds() else None
        try:
            async with asyncio.timeout(within):
                lease, held_before = await self._journal.take_lease(
                    self.name, LEASE_SECONDS, self._gone
                )
        except (JournalError, TimeoutError) as exc:
            if self.holds() and time.monotonic() >= self._held_until:
                self._follow("lease_not_renewed", error=str(exc) or "no answer in time")
            return
        if lease.holder == self._journal.claimer:
            # Counted from before the question: the lease may have been written a moment later.
            self._held_until = asked + LEASE_SECONDS - GIVE_UP_MARGIN_SECONDS
            if not self.holds():
                self.succeeded = held_before
                self.following.clear()
                self.leading.set()
                log.info(
                    "fleet_lease_taken", lease=self.name, expires=round(lease.expires, 3),
                    dead_holder=self._dead_holder,
                )  # fmt: skip
            self._dead_holder = None
        elif self.holds():
            self._follow("lease_taken_by_another", holder=lease.holder)

    def _gone(self, holder: str) -> bool:
        """Whether `holder` is known dead here (a process of this host that no longer runs)."""
        dead = holder in claimer_liveness([holder]).dead
        if dead:
            self._dead_holder = holder
        return dead

    def _follow(self, reason: str, **fields: str) -> None:
        self.leading.clear()
        self.following.set()
        log.warning("fleet_lease_lost", lease=self.name, reason=reason, **fields)


async def _first(*events: asyncio.Event, task: asyncio.Task[None] | None = None) -> None:
    """Return once one of `events` is set (or `task` has ended)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait([*waiters, *([task] if task else [])], return_when="FIRST_COMPLETED")
    finally:
        for waiter in waiters:
            waiter.cancel()


async def take_intake_while_leading(
    role: FleetRole,
    options: BusOptions,
    consume: Callable[[Bus], Coroutine[Any, Any, None]],
    stop: asyncio.Event,
    on_session_lost: Callable[[], None] | None = None,
) -> None:
    """While this member holds the fleet's lease, connect the fleet's intake session
    (`options`: its fixed client id, a persistent session, the events topic not shared) and
    `consume` it; disconnect as soon as the lease is lost, so the next holder's connection with
    the same client id takes the session and what the broker queued for it. Until `stop`.
    Taking over from an earlier holder, the session is expected at the broker: a broker
    without it tells `on_session_lost` (see Bus)."""
    while not stop.is_set():
        await _first(role.leading, stop)
        if stop.is_set():
            return
        log.info("fleet_intake_taken", client_id=options.client_id)
        async with Bus(
            options, expect_session=role.succeeded, on_session_lost=on_session_lost
        ) as bus:
            consuming = asyncio.create_task(consume(bus), name="consume")
            await _first(role.following, stop, task=consuming)
            if consuming.done():
                await consuming  # it failed (the bus keeper did): the daemon fails as alone
            consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consuming
        log.info("fleet_intake_released", client_id=options.client_id)
