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
from replicator.daemon.orphans import Orphans
from replicator.daemon.pruning import prune_forever
from replicator.daemon.reconcile import reconcile_forever
from replicator.daemon.result_events import ResultPublisher
from replicator.daemon.sd_notify import Notifier
from replicator.domain import jobs as job_rules
from replicator.domain.destinations import unreachable_since
from replicator.domain.events.echoes import REPLICA_USER_AGENT
from replicator.domain.routing import Site, replicated_to, returning_routes
from replicator.engine.copier import Copier
from replicator.engine.destination_states import DestinationStates
from replicator.engine.job_queue import JobEnd, JobObserver
from replicator.engine.journal_retry import persist
from replicator.engine.runner import JobRunner
from replicator.engine.tag_pushes import resolve_tag_push
from replicator.errors import JournalError, ReplicatorError
from replicator.journal.claimers import open_journal
from replicator.journal.deferred import DeferredMessage
from replicator.journal.store import Journal
from replicator.logs import get_logger
from replicator.registry.client import RegistryClient
from replicator.registry.pool import ClientPool

log = get_logger(__name__)


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
            fleet = bool(self.config.mqtt.shared_group)
            orphans = Orphans(
                self.journal, lambda: self.config.workers, self._observers, fleet=fleet
            )
            resumed = await orphans.resume_at_start(self.metrics)
            log.info("daemon_starting", resumed=resumed, registries=sorted(self.sites))
            group_name = self.config.mqtt.shared_group
            self.role = role = FleetRole(self.journal, CHORES_LEASE, alone=not fleet)
            intake = FleetRole(self.journal, intake_lease(group_name), alone=not fleet)
            self.metrics.fleet_intake.set_function(lambda: float(intake.holds()))
            self.metrics.fleet_chores.set_function(lambda: float(role.holds()))
            member = self._member_bus_options()
            made = await self._session_made(member)
            async with (
                Bus(member, expect_session=made, on_session_lost=self._reconcile_soon.set) as bus,
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
                    group.create_task(orphans.announce(bus, publisher), name="announce"),
                    group.create_task(self._ready(runner, health), name="ready"),
                    group.create_task(self._remember_session(bus), name="mqtt-session"),
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
                    group.create_task(
                        orphans.sweep_forever(role.holds, self._stopping), name="orphans"
                    ),
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
                            returning=lambda: returning_routes(self.sites),
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

    async def _session_made(self, options: BusOptions) -> bool:
        """Whether this daemon made its persistent session at the broker before (the journal
        remembers): then a CONNACK without it is a session lost, its events with it — a broker
        restarted without its store, or the session expired while the daemon was down — and a
        reconcile pass runs at once. A journal that cannot say counts as a first start."""
        if not options.persistent or self.journal is None:
            return False
        try:
            return await self.journal.mqtt_session_made(options.client_id, options.address)
        except JournalError as exc:
            log.warning("mqtt_session_unknown", client_id=options.client_id, error=str(exc))
            return False

    async def _remember_session(self, bus: Bus) -> None:
        """Once connected, record the persistent session in the journal (see _session_made)."""
        options = bus.options
        if not options.persistent or self.journal is None:
            return
        await bus.connected.wait()
        try:
            await self.journal.remember_mqtt_session(options.client_id, options.address)
        except JournalError as exc:
            log.warning("mqtt_session_not_recorded", client_id=options.client_id, error=str(exc))

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


def daemon_main(config_path: str | None) -> int:
    """Load the config and run the daemon (the `run` command)."""
    config = load_config(config_path)
    return asyncio.run(Daemon(config).run())
