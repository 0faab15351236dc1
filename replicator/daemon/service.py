"""The daemon: bus consumer -> journal -> workers, in one TaskGroup, with signals and reload.

A message is acknowledged only once its jobs (or its rejection) are in the journal, so a crash
between receipt and journal loses nothing: the broker delivers it again. The journal is the
queue; memory holds only the jobs being worked on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from replicator.config.loading import Config, load_config
from replicator.config.reload import DAEMON_RESTART_KEYS, changed_keys, keep_bound, reread
from replicator.config.sites import registry_client, sites_of
from replicator.daemon.api import serve_api
from replicator.daemon.bus import Bus, BusOptions
from replicator.daemon.deferred_intake import retry_deferred_forever
from replicator.daemon.fleet import (
    CHORES_LEASE,
    FleetRole,
    intake_client_id,
    intake_lease,
    take_intake_while_leading,
)
from replicator.daemon.health import HealthWatch
from replicator.daemon.intake import Intake
from replicator.daemon.metrics import Metrics
from replicator.daemon.pruning import prune_forever
from replicator.daemon.reconcile import reconcile_forever
from replicator.daemon.result_events import ResultPublisher
from replicator.daemon.sd_notify import Notifier
from replicator.domain import jobs as job_rules
from replicator.domain.destinations import unreachable_since
from replicator.domain.events.echoes import REPLICA_USER_AGENT
from replicator.domain.routing import Site, replicated_to
from replicator.engine.copier import Copier
from replicator.engine.destination_states import DestinationStates
from replicator.engine.job_queue import JobEnd, JobObserver
from replicator.engine.journal_retry import persist
from replicator.engine.pauses import sleep_until
from replicator.engine.runner import JobRunner
from replicator.engine.tag_pushes import resolve_tag_push
from replicator.errors import BusError, JournalError, ReplicatorError
from replicator.journal.claimers import open_journal, resume_orphans
from replicator.journal.deferred import DeferredMessage
from replicator.journal.models import JobRow
from replicator.journal.store import Journal
from replicator.logs import get_logger
from replicator.registry.client import RegistryClient
from replicator.registry.pool import ClientPool

log = get_logger(__name__)

# How long `run` waits for the broker before warning that it is not connected yet (it keeps
# trying afterwards, and jobs already journalled run meanwhile).
CONNECT_WAIT_SECONDS = 10.0
# The daemon looks for orphans ([workers] orphan_after) ten times per that age: a dead peer's
# jobs wait at most a tenth longer than the age, a dead local process's at most a tenth of it,
# for two cheap queries a sweep.
ORPHAN_SWEEPS_PER_AGE = 10
# A claim time no job has: a sweep with it re-queues only the jobs of dead local processes.
_NO_AGE = datetime(1970, 1, 1, tzinfo=UTC)


class Daemon:
    """`replicator run`: one process, one config, one journal."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # The config as the process started: what DAEMON_RESTART_KEYS name stays as in it.
        self._started = config
        self.sites: Mapping[str, Site] = sites_of(config)
        self.metrics = Metrics()
        self.metrics.declare_destinations(sorted(replicated_to(self.sites)))
        self.journal: Journal | None = None
        self.bus: Bus | None = None
        self.runner: JobRunner | None = None
        self.role: FleetRole | None = None
        self.health: HealthWatch | None = None
        self.destinations: DestinationStates | None = None
        # Told of every finished job: counted in the metrics, published once the bus is up.
        self._observers: list[JobObserver] = [self.metrics]
        # Why the journal last refused a write, until a write succeeds again (for /readyz).
        self.journal_error: str | None = None
        # Jobs set aside (FAILED PROCESS_DIED) at start, before the bus was up: their result
        # events are published once it is (see _announce).
        self._set_aside_at_start: list[JobEnd] = []
        self._stopping = asyncio.Event()
        # Set when the broker lost the session the events come through: reconcile runs now.
        self._reconcile_soon = asyncio.Event()
        self._notifier = Notifier.from_environment()
        self._copier = Copier(
            concurrency=config.workers.concurrency,
            chunk_threshold=config.workers.chunk_threshold,
            on_blob=self.metrics.observe_blob,
            floor=config.workers.transfer_floor,
            on_pace=self.metrics.observe_pace,
        )
        self._pool = ClientPool.sized_for(
            config.workers.concurrency, observer=self.metrics, user_agent=REPLICA_USER_AGENT
        )

    @property
    def slow_sources(self) -> list[str]:
        """Source hosts whose blob reads are cut below the floor rate repeatedly."""
        return self._copier.slow_sources

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.journal = await open_journal(self.config.journal.url)
        try:
            # Alone, an IN_PROGRESS job at start is ours, orphaned by a crash, unless a process
            # of this host still runs it (a backfill sharing the journal): resume the rest.
            # In a fleet (shared group) peers may be running theirs right now: resume only jobs
            # of processes gone from this host, and jobs claimed long enough ago that no live
            # daemon can still be copying them.
            fleet = bool(self.config.mqtt.shared_group)
            resumed = await resume_orphans(
                self.journal,
                started_before=self._orphaned_before() if fleet else None,
                max_deaths=self.config.workers.max_deaths,
                on_set_aside=self._set_aside_before_the_bus,
            )
            log.info("daemon_starting", resumed=resumed, registries=sorted(self.sites))
            group_name = self.config.mqtt.shared_group
            self.role = role = FleetRole(self.journal, CHORES_LEASE, alone=not fleet)
            intake = FleetRole(self.journal, intake_lease(group_name), alone=not fleet)
            self.metrics.fleet_intake.set_function(lambda: float(intake.holds()))
            self.metrics.fleet_chores.set_function(lambda: float(role.holds()))
            async with (
                Bus(self._member_bus_options(), on_session_lost=self._reconcile_soon.set) as bus,
                self._pool,
                asyncio.TaskGroup() as group,
            ):
                self.bus = bus
                publisher = ResultPublisher(bus, lambda: self.config)
                self._observers.append(publisher)
                self.destinations = states = DestinationStates(
                    self.journal,
                    clients=self._client_of,
                    on_change=self.metrics.destination_reachable,
                    on_release=self._wake_runner,
                )
                self.runner = runner = JobRunner(
                    journal=self.journal,
                    copier=self._copier,
                    pool=self._pool,
                    settings=lambda: (self.config, self.sites),
                    observers=self._observers,
                    destinations=states,
                )
                self.health = health = HealthWatch(
                    self._notifier, self.journal, runner, self.metrics, bus.connected.is_set
                )
                self.metrics.watch_broker(bus.connected.is_set)
                long_lived = [
                    group.create_task(self._intake_task(bus, runner, intake), name="intake"),
                    group.create_task(intake.keep(self._stopping), name="intake-lease"),
                    group.create_task(role.keep(self._stopping), name="chores-lease"),
                    group.create_task(states.probe_forever(self._stopping), name="probe"),
                    group.create_task(runner.run(self._stopping), name="dispatch"),
                    group.create_task(
                        serve_api(self, self._stopping, fleet_wide=role.holds), name="api"
                    ),
                    group.create_task(self._announce(bus, publisher), name="announce"),
                    group.create_task(self._ready(runner, health), name="ready"),
                    group.create_task(health.probe_journal(), name="journal-probe"),
                    group.create_task(health.watch(), name="watchdog"),
                    group.create_task(
                        reconcile_forever(
                            self,
                            self._pool,
                            self._stopping,
                            leading=role.holds,
                            soon=self._reconcile_soon,
                        ),
                        name="reconcile",
                    ),
                    group.create_task(self._sweep_orphans(role), name="orphans"),
                    group.create_task(
                        retry_deferred_forever(self.journal, self.handle_kept, self._stopping),
                        name="deferred",
                    ),
                    group.create_task(
                        prune_forever(
                            self.journal,
                            lambda: self.config.journal.retention_days,
                            self._stopping,
                            leading=role.holds,
                        ),
                        name="prune",
                    ),
                ]
                await self._stopping.wait()
                self._notifier.stopping("draining in-flight copies")
                log.info("daemon_stopping", in_flight=len(runner.running))
                await runner.drain(self.config.workers.grace_period)
                for task in long_lived:
                    task.cancel()
        finally:
            await self.journal.close()
        log.info("daemon_stopped")
        return 0

    def _member_bus_options(self) -> BusOptions:
        """This member's own connection: alone, it takes the events too; in a fleet it only
        publishes results (the events come through the fleet's intake session, see fleet.py),
        so it keeps no session at the broker."""
        mqtt = self.config.mqtt
        if not mqtt.shared_group:
            return BusOptions.from_config(mqtt)
        return BusOptions.from_config(mqtt, subscribe=False, persistent=False)

    async def _intake_task(self, bus: Bus, runner: JobRunner, role: FleetRole) -> None:
        """Take the events: alone, on this member's own session; in a fleet, on the fleet's
        intake session while this member holds the lease."""
        mqtt = self.config.mqtt
        if role.alone:
            await self._consume(bus, runner)
            return
        options = dataclasses.replace(
            BusOptions.from_config(mqtt, client_id=intake_client_id(mqtt.shared_group)),
            shared_group="",
        )

        async def consume(intake: Bus) -> None:
            await self._consume(intake, runner)

        await take_intake_while_leading(
            role, options, consume, self._stopping, on_session_lost=self._reconcile_soon.set
        )

    async def _sweep_orphans(self, role: FleetRole) -> None:
        """Re-queue jobs a dead process left IN_PROGRESS: a peer of the fleet, or a backfill
        killed on this host while sharing the journal. Every member re-queues those of dead
        processes of its own host (known dead at once); the jobs of other hosts' processes,
        taken for orphans by their age, are swept by the lease's holder alone."""
        while not self._stopping.is_set():
            await sleep_until(
                self.config.workers.orphan_after / ORPHAN_SWEEPS_PER_AGE, self._stopping
            )
            if self._stopping.is_set() or self.journal is None:
                return
            try:
                await resume_orphans(
                    self.journal,
                    started_before=self._orphaned_before() if role.holds() else _NO_AGE,
                    max_deaths=self.config.workers.max_deaths,
                    on_set_aside=self._set_aside,
                )
            except JournalError as exc:
                log.warning("orphan_sweep_failed", error=str(exc))

    async def _set_aside_before_the_bus(self, row: JobRow) -> None:
        """A job set aside at start: counted now, its result published once the bus is up."""
        end = _set_aside_end(row)
        await self.metrics.job_ended(end)
        self._set_aside_at_start.append(end)

    async def _set_aside(self, row: JobRow) -> None:
        """A job set aside by a sweep: reported as every FAILED job is (metrics, result)."""
        for observer in self._observers:
            await observer.job_ended(_set_aside_end(row))

    def _orphaned_before(self) -> datetime:
        """A job claimed before this moment by a process not of this host is an orphan."""
        return datetime.now(UTC) - timedelta(seconds=self.config.workers.orphan_after)

    def stop(self) -> None:
        """Stop taking messages; in-flight copies get the grace period, the rest stays queued."""
        self._stopping.set()

    def reload(self) -> None:
        """SIGHUP: load the config again; keep the old one if the new one is invalid. What is
        bound at start (DAEMON_RESTART_KEYS) keeps its value and is named in a warning."""
        fresh = reread(self.config)
        if fresh is None:
            return
        restart = changed_keys(self._started, fresh, DAEMON_RESTART_KEYS)
        if restart:
            log.warning("config_restart_required", keys=restart)
        if self.health is not None:
            self.health.restart_required = restart
        self.config = keep_bound(self._started, fresh, DAEMON_RESTART_KEYS)
        self.sites = sites_of(self.config)
        self.metrics.declare_destinations(sorted(replicated_to(self.sites)))
        log.info(
            "config_reloaded",
            path=str(fresh.path),
            registries=sorted(self.sites),
            restart_required=restart,
        )

    async def _ready(self, runner: JobRunner, health: HealthWatch) -> None:
        """READY=1 once the journal is open and the dispatcher has gone round: jobs already in
        the journal run from now on, whether the broker answers or not."""
        await runner.went_round.wait()
        self._notifier.ready(health.status_line(None))
        log.info(
            "daemon_ready", broker_connected=self.bus is not None and self.bus.connected.is_set()
        )

    async def _announce(self, bus: Bus, publisher: ResultPublisher) -> None:
        """Once the broker is reached, publish the results of the jobs set aside at start."""
        try:
            await bus.wait_connected(CONNECT_WAIT_SECONDS)
        except BusError as exc:
            log.warning("mqtt_not_yet_connected", error=str(exc))
            await bus.connected.wait()
        while self._set_aside_at_start:
            await publisher.job_ended(self._set_aside_at_start.pop(0))

    async def unready(self) -> str | None:
        """Why the daemon is not ready (for /readyz): broker not connected, journal not open,
        not writable or not readable, a destination unreachable; None when it is ready."""
        if self.bus is None or not self.bus.connected.is_set():
            return "MQTT broker not connected"
        if self.journal is None:
            return "journal not open"
        if self.journal_error is not None:
            return f"journal not writable: {self.journal_error}"
        try:
            await self.journal.backlog()
        except ReplicatorError as exc:
            return f"journal: {exc}"
        if self.destinations is not None and (down := self.destinations.unreachable()):
            return "; ".join(
                unreachable_since(name, since.isoformat(timespec="seconds"))
                for name, since in sorted(down.items())
            )
        return None

    def _wake_runner(self) -> None:
        """Jobs were released (a destination answers again): claim them now."""
        if self.runner is not None:
            self.runner.wake()

    def _client_of(self, name: str) -> RegistryClient | None:
        """The pooled client of registry `name` (for probes), None once it left the config."""
        if name not in self.config.registries:
            return None
        return registry_client(self._pool, self.config, name)

    # -- consuming ----------------------------------------------------------------------------

    async def _consume(self, bus: Bus, runner: JobRunner) -> None:
        async for message in bus.messages():
            if self._stopping.is_set():
                return  # not acked: the broker redelivers it to us (or a peer) later
            if not await self._journal_message(message.topic, message.payload, message.source_name):
                return  # stopping before the journal took it: not acked, the broker keeps it
            await bus.ack(message)
            runner.wake()

    async def _journal_message(self, topic: str, payload: bytes, source: str | None) -> bool:
        """Record one message, retrying while the journal refuses writes (the message stays
        unacknowledged meanwhile, so nothing is lost and no further message is taken); False
        when the daemon is stopping before it could be recorded. Recording is idempotent, so
        a retry after a partly recorded batch changes no job twice."""

        def failed(exc: JournalError) -> None:
            if self.journal_error is None:
                log.error("journal_unwritable", error=str(exc), topic=topic)
            self.journal_error = str(exc)

        async def write() -> bool:
            await self.handle_message(topic, payload, source)
            return True

        if await persist(write, failed=failed, stop=self._stopping) is None:
            return False
        if self.journal_error is not None:
            log.info("journal_writable", topic=topic)
            self.journal_error = None
        return True

    async def handle_message(self, topic: str, payload: bytes, topic_source: str | None) -> None:
        """Parse, route and journal one bus message (accepted, ignored or rejected); raises
        only a temporary JournalError (see Intake)."""
        await self._intake().handle(topic, payload, topic_source)

    async def handle_kept(self, kept: DeferredMessage) -> None:
        """Handle again a message intake kept aside (its source could not answer for a tag)."""
        await self._intake().handle(kept.topic, kept.payload, kept.source, attempts=kept.attempts)
        if self.runner is not None:
            self.runner.wake()

    def _intake(self) -> Intake:
        assert self.journal is not None
        return Intake(
            self.journal,
            self.metrics,
            lambda: self.sites,
            self._report_denied,
            resolve=lambda event: resolve_tag_push(event, self.config, self._pool),
            max_attempts=self.config.workers.max_attempts,
        )

    async def _report_denied(self, key: job_rules.JobKey, reason: str) -> None:
        end = JobEnd(
            key, job_rules.JobState.FAILED, code=job_rules.FailureCode.POLICY_DENIED, reason=reason
        )
        for observer in self._observers:
            await observer.job_ended(end)


def _set_aside_end(row: JobRow) -> JobEnd:
    """How a job set aside at recovery (FAILED PROCESS_DIED) ended, as observers are told."""
    code = None if row.failure_code is None else job_rules.failure_code(row.failure_code)
    return JobEnd(row.key, row.state, row.pushed_at, code, row.failure_reason)


def daemon_main(config_path: str | None) -> int:
    """Load the config and run the daemon (the `run` command)."""
    config = load_config(config_path)
    return asyncio.run(Daemon(config).run())
