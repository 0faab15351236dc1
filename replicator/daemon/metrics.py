"""Prometheus metrics of the daemon, on a registry of its own (no process-global state)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from replicator.domain.jobs import JobState
from replicator.engine.runner import JobEnd
from replicator.registry.retry import set_retry_hook

# Push-to-COMPLETE latency buckets: the target is well under a second on a LAN, WAN copies of
# large images take minutes; the buckets cover both ends.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class Metrics:
    """Counters, gauges and the latency histogram, rendered by `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "replicator_events_total",
            "Bus messages by outcome and reject reason",
            ["outcome", "reason"],
            registry=r,
        )
        self.jobs_finished = Counter(
            "replicator_jobs_finished_total",
            "Jobs that reached COMPLETE or FAILED",
            ["destination", "result"],
            registry=r,
        )
        self.retries = Counter(
            "replicator_job_retries_total",
            "Job attempts that failed temporarily and wait to retry",
            ["destination"],
            registry=r,
        )
        self.request_retries = Counter(
            "replicator_request_retries_total",
            "Registry requests retried after a temporary error",
            ["code"],
            registry=r,
        )
        self.blobs = Counter(
            "replicator_blobs_total",
            "Blobs by what was done: copied, mounted, skipped",
            ["action"],
            registry=r,
        )
        self.bytes_copied = Counter(
            "replicator_bytes_copied_total", "Blob bytes streamed to destinations", registry=r
        )
        self.latency = Histogram(
            "replicator_replication_latency_seconds",
            "From the push's timestamp to the job's COMPLETE",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.jobs = Gauge(
            "replicator_jobs",
            "Jobs in the journal by state and destination",
            ["state", "destination"],
            registry=r,
        )
        self.backlog = Gauge(
            "replicator_journal_backlog",
            "Jobs not yet finished (PENDING, RETRY_WAIT, IN_PROGRESS)",
            registry=r,
        )
        set_retry_hook(self._on_retry)

    def _on_retry(self, exc: BaseException | None) -> None:
        self.request_retries.labels(code=getattr(exc, "code", "UNKNOWN")).inc()

    def observe_blob(self, action: str, size: int) -> None:
        """Count a blob step (the copier calls this)."""
        self.blobs.labels(action=action).inc()
        if size:
            self.bytes_copied.inc(size)

    async def job_ended(self, end: JobEnd) -> None:
        """Count a job attempt (a job observer): a retry, or a finished job and, on success,
        its latency from the push."""
        destination = end.key.destination
        if end.state is JobState.RETRY_WAIT:
            self.retries.labels(destination=destination).inc()
            return
        succeeded = end.state is JobState.COMPLETE
        # COMPLETE, FAILED, or SUPERSEDED (the source moved on since the job's event).
        self.jobs_finished.labels(destination=destination, result=end.state.value).inc()
        if succeeded and end.pushed_at is not None:
            latency = (datetime.now(UTC) - end.pushed_at).total_seconds()
            self.latency.labels(destination=destination).observe(max(0.0, latency))

    def render(self, counts: dict[tuple[str, str], int], backlog: int) -> bytes:
        """The exposition text, with the journal's gauges refreshed first."""
        self.jobs.clear()
        for (state, destination), count in counts.items():
            self.jobs.labels(state=str(state), destination=destination).set(count)
        self.backlog.set(backlog)
        return generate_latest(self.registry)
