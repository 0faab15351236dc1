"""Prometheus metrics of the daemon, on a registry of its own (no process-global state).

Names follow Prometheus's naming guide (`replicator_` prefix, base units, the unit before
`_total`); label values are lower case. Scrapes are served from memory: the journal's gauges
(jobs per state, backlog, oldest unreplicated push) are refreshed by `refresh_journal` on a
timer, never by a query per scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram, generate_latest

from replicator import __version__
from replicator.daemon.prometheus import new_registry
from replicator.domain.events.echoes import EchoReason
from replicator.domain.jobs import JobState
from replicator.engine.job_queue import JobEnd
from replicator.registry.resumed import Direction, set_resume_hook
from replicator.registry.retry import set_retry_hook

# Push-to-COMPLETE latency buckets: the target is well under a second on a LAN, WAN copies of
# large images take minutes; the buckets cover both ends.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# Registry request durations (to the response's headers): a HEAD on a LAN takes a millisecond,
# a blob PUT's commit or a throttled cloud registry several seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# How a job can end, as `replicator_jobs_finished_total{result}` names it.
FINISHED_RESULTS = tuple(
    state.value.lower() for state in (JobState.COMPLETE, JobState.FAILED, JobState.SUPERSEDED)
)
# A label value for an error that did not come from a known registry host.
UNKNOWN = "unknown"


def error_kind(status: int | None) -> str | None:
    """What kind of registry failure an exchange was, or None when it was not one.

    A 4xx is the client's own flow (a HEAD's 404, an auth challenge's 401) and not counted;
    no answer, a 429 and a 5xx are the registry failing or pushing back.
    """
    if status is None:
        return "transport"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server"
    return None


class Metrics:
    """Counters, gauges and histograms, rendered by `/metrics`."""

    def __init__(self) -> None:
        self.registry = new_registry()
        r = self.registry
        self.events = Counter(
            "replicator_events_total",
            "Bus messages by outcome and reject reason",
            ["outcome", "reason"],
            registry=r,
        )
        # The echo series exist at 0 from the start: `increase()` over them then sees the first
        # echoes of an active-active pair (domain/events/echoes.py), and 0 reads "none" in a
        # one-way one.
        for reason in EchoReason:
            self.events.labels(outcome="echo", reason=reason.value)
        self.jobs_finished = Counter(
            "replicator_jobs_finished_total",
            "Jobs that ended: complete, failed or superseded",
            ["destination", "result"],
            registry=r,
        )
        self.retries = Counter(
            "replicator_job_retries_total",
            "Job attempts that failed temporarily and wait to retry",
            ["destination"],
            registry=r,
        )
        self.blobs = Counter(
            "replicator_blobs_total",
            "Blobs by what was done: copied, mounted, skipped",
            ["action"],
            registry=r,
        )
        self.copied_bytes = Counter(
            "replicator_copied_bytes_total", "Blob bytes streamed to destinations", registry=r
        )
        self.latency = Histogram(
            "replicator_replication_latency_seconds",
            "From the push's timestamp to the job's completion",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "replicator_registry_requests_total",
            "HTTP exchanges with registries, by status code (none: no answer)",
            ["host", "method", "code"],
            registry=r,
        )
        self.request_errors = Counter(
            "replicator_registry_request_errors_total",
            "Registry exchanges that failed: transport (no answer), throttled (429), server (5xx)",
            ["host", "kind"],
            registry=r,
        )
        self.request_retries = Counter(
            "replicator_registry_request_retries_total",
            "Registry requests retried after a temporary error, by error code",
            ["host", "code"],
            registry=r,
        )
        self.resumes = Counter(
            "replicator_blob_resumes_total",
            "Blob transfers that went on after the link broke, by registry and direction",
            ["host", "direction"],
            registry=r,
        )
        self.request_duration = Histogram(
            "replicator_registry_request_duration_seconds",
            "From sending a registry request to its response's headers",
            ["host", "method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.jobs = Gauge(
            "replicator_jobs",
            "Jobs in the journal by state and destination (refreshed on a timer)",
            ["state", "destination"],
            registry=r,
        )
        self.backlog = Gauge(
            "replicator_journal_backlog",
            "Jobs waiting for a worker: pending and retry_wait (refreshed on a timer)",
            registry=r,
        )
        self.deferred = Gauge(
            "replicator_events_deferred",
            "Bus messages kept aside until their source answers for a tag they name (refreshed "
            "on a timer)",
            registry=r,
        )
        self.unreplicated_age = Gauge(
            "replicator_oldest_unreplicated_push_age_seconds",
            "Age of the oldest push not yet replicated to the destination (0 when none): the "
            "recovery point",
            ["destination"],
            registry=r,
        )
        self.fleet_intake = Gauge(
            "replicator_fleet_intake",
            "1 while this member takes the events (alone, or holding its group's intake lease)",
            registry=r,
        )
        self.fleet_chores = Gauge(
            "replicator_fleet_chores",
            "1 while this member runs the journal's chores (alone, or holding the chores lease); "
            "the journal's gauges are exported by this member only",
            registry=r,
        )
        self.broker_connected = Gauge(
            "replicator_broker_connected",
            "1 while connected and subscribed to the MQTT broker, else 0 (jobs already in the "
            "journal run either way)",
            registry=r,
        )
        # Python's version is python_info's (the default collectors), not repeated here.
        self.build_info = Gauge(
            "replicator_build_info",
            "Always 1; its label says which replicator runs",
            ["version"],
            registry=r,
        )
        self.build_info.labels(version=__version__).set(1)
        # When (time.monotonic()) a registry exchange last ended: progress, for the watchdog.
        self.exchanged_at: float | None = None
        self.transfers_cut = Counter(
            "replicator_transfers_cut_total",
            "Source blob reads cut for moving less than workers.transfer_floor_rate",
            ["host"],
            registry=r,
        )
        self.source_slow = Gauge(
            "replicator_source_slow",
            "1 while a source's blob reads are cut below the floor rate repeatedly, else 0",
            ["host"],
            registry=r,
        )
        self.reachable = Gauge(
            "replicator_destination_reachable",
            "1 while the destination answers, 0 while it is unreachable (its jobs wait and one "
            "probe at a time asks it)",
            ["destination"],
            registry=r,
        )
        self._oldest: dict[str, datetime | None] = {}
        # The configured destinations: their series exist (at 0) before anything happens.
        self._destinations: tuple[str, ...] = ()
        self._down: set[str] = set()
        # Set when a job ends: the journal's gauges are then read again (see api.py).
        self.journal_changed = asyncio.Event()
        set_retry_hook(self._on_retry)
        set_resume_hook(self._on_resume)

    def declare_destinations(self, destinations: Iterable[str]) -> None:
        """Create every per-destination series at 0 (at start and on reload): an alert on
        `increase(...)` sees a first failure only if the series existed before it."""
        self._destinations = tuple(destinations)
        for destination in self._destinations:
            for result in FINISHED_RESULTS:
                self.jobs_finished.labels(destination=destination, result=result)
            self.retries.labels(destination=destination)
            self.latency.labels(destination=destination)
            if destination not in self._down:
                self.reachable.labels(destination=destination).set(1)
            self._oldest.setdefault(destination, None)

    def watch_broker(self, connected: Callable[[], bool]) -> None:
        """Read replicator_broker_connected from `connected` at each scrape."""
        self.broker_connected.set_function(lambda: float(connected()))

    def destination_reachable(self, destination: str, reachable: bool) -> None:
        """A destination's reachability changed (domain.destinations)."""
        if reachable:
            self._down.discard(destination)
        else:
            self._down.add(destination)
        self.reachable.labels(destination=destination).set(1 if reachable else 0)

    def _on_retry(self, exc: BaseException | None) -> None:
        code = str(getattr(exc, "code", UNKNOWN)).lower()
        self.request_retries.labels(host=getattr(exc, "host", None) or UNKNOWN, code=code).inc()

    def _on_resume(self, host: str, direction: Direction) -> None:
        self.resumes.labels(host=host, direction=direction).inc()

    def request_done(self, host: str, method: str, status: int | None, seconds: float) -> None:
        """Count one registry exchange (the registry client's RequestObserver)."""
        self.exchanged_at = time.monotonic()
        method = method.lower()  # label values in one case, as Go's promhttp does
        self.requests.labels(host=host, method=method, code=str(status or "none")).inc()
        self.request_duration.labels(host=host, method=method).observe(seconds)
        kind = error_kind(status)
        if kind is not None:
            self.request_errors.labels(host=host, kind=kind).inc()

    def observe_blob(self, action: str, size: int) -> None:
        """Count a blob step (the copier calls this)."""
        self.blobs.labels(action=action).inc()
        if size:
            self.copied_bytes.inc(size)

    def observe_pace(self, host: str, cuts_in_a_row: int, slow: bool) -> None:
        """A source read was cut (cuts_in_a_row > 0) or kept the pace (the copier's
        PaceObserver)."""
        if cuts_in_a_row:
            self.transfers_cut.labels(host=host).inc()
        self.source_slow.labels(host=host).set(1 if slow else 0)

    async def job_ended(self, end: JobEnd) -> None:
        """Count a job attempt (a job observer): a retry, or a finished job and, on success,
        its latency from the push."""
        destination = end.key.destination
        self.journal_changed.set()
        if end.state is JobState.RETRY_WAIT:
            self.retries.labels(destination=destination).inc()
            return
        succeeded = end.state is JobState.COMPLETE
        # complete, failed, or superseded (the source moved on since the job's event).
        self.jobs_finished.labels(destination=destination, result=end.state.value.lower()).inc()
        if succeeded and end.pushed_at is not None:
            latency = (datetime.now(UTC) - end.pushed_at).total_seconds()
            self.latency.labels(destination=destination).observe(max(0.0, latency))

    def refresh_journal(
        self,
        counts: Mapping[tuple[str, str], int],
        backlog: int,
        oldest: Mapping[str, datetime],
        deferred: int = 0,
    ) -> None:
        """Replace the journal's gauges with a fresh reading (state names in lower case)."""
        self.deferred.set(deferred)
        self.jobs.clear()
        for (state, destination), count in counts.items():
            self.jobs.labels(state=str(state).lower(), destination=destination).set(count)
        self.backlog.set(backlog)
        destinations = {d for _, d in counts} | set(oldest) | set(self._destinations)
        self._oldest = {d: oldest.get(d) for d in destinations}
        self.unreplicated_age.clear()

    def forget_journal(self) -> None:
        """Export no journal gauges (the unlabelled ones as 0): another member of the fleet
        reads them, so their sum over the fleet counts each job once."""
        self.refresh_journal({}, 0, {})

    def render(self, now: datetime | None = None) -> bytes:
        """The exposition text; the recovery-point ages are computed from `now`."""
        now = now or datetime.now(UTC)
        for destination, pushed in self._oldest.items():
            age = (now - pushed).total_seconds() if pushed is not None else 0.0
            self.unreplicated_age.labels(destination=destination).set(max(0.0, age))
        return generate_latest(self.registry)
