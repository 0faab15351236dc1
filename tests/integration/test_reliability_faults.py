"""Reliability under registry faults: flaky, dead and slow destinations behind a fault proxy.

The daemon runs as a subprocess on a generated config whose registries are fault proxies in
front of real docker-registry processes; events are published straight to the broker. Figures
of each run go to RELIABILITY.md (see tests/support/scenarios.py, `record_figures`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from replicator.domain.jobs import CLAIMABLE_STATES, JobState
from tests.support.daemon import (
    DESTINATIONS,
    EUW1,
    USE1,
    USW2,
    JournalReader,
    Stack,
    metric_value,
    start_stack,
    wait_for,
)
from tests.support.fault_proxy import Fault, FaultKind, FaultProxy, blob_get, requests
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.scenarios import (
    assert_one_complete_job_each,
    corrupt_blobs,
    missing_at,
    push_and_publish,
    record_figures,
    tiny_images,
    wait_jobs_finished,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ProxyFactory = Callable[[Registry], FaultProxy]
# The fault rate, over a burst of half the 200 pushes: 200 jobs still meet every
# fault kind dozens of times at each destination (RELIABILITY.md has a run of each size), and the
# suite spends half a minute less (the 200 took 61 s on an idle machine).
BURST = 100
FAULT_SHARE = 0.20
# Status faults a destination answers instead of the registry, each equally likely.
STATUS_FAULTS = ((500, None, False), (502, None, False), (503, None, False),
                 (429, 1, False), (429, 1, True))  # fmt: skip
# Each of the destination's rules fires with this share of the requests reaching it, so that
# FAULT_SHARE of all requests get one (the rules are tried in turn).
PER_RULE_SHARE = 1 - (1 - FAULT_SHARE) ** (1 / len(STATUS_FAULTS))
# The source cuts this share of blob downloads short (truncated, or reset mid-body).
SOURCE_CUT_SHARE = 0.05
# 200 jobs through faulty proxies with 1 s Retry-After waits on a 2-core machine: half a
# minute; six leave room for a loaded CI runner.
BURST_SECONDS = 180.0
# The dead destination: few attempts, so the job gives up in seconds, not minutes.
DEAD_MAX_ATTEMPTS = 2
DEAD_IMAGES = 5
DEAD_SECONDS = 90.0
# The slow destination waits this long before forwarding every request: a loopback request
# takes a few milliseconds, so this is over 100 times slower.
SLOW_STALL_SECONDS = 0.5
SLOW_IMAGES = 16
# The daemon's defaults: a destination may hold half of the workers.
SLOW_CONCURRENCY, SLOW_PER_REGISTRY = 16, 8


@dataclass
class FaultStack:
    """A stack whose three registries sit behind fault proxies."""

    stack: Stack
    proxies: dict[str, FaultProxy]

    @property
    def journal(self) -> Path:
        """The journal's SQLite file."""
        return self.stack.folder / "journal.db"


@pytest.fixture
def fault_stack_factory(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    fault_proxy_factory: ProxyFactory,
    tmp_path: Path,
) -> Iterator[Callable[..., FaultStack]]:
    """Starts a stack (own broker, no registry webhooks) with a proxy before every registry;
    `front` overrides the URL the config names for a registry."""
    started: list[Stack] = []

    def start(
        front: dict[str, Callable[[Registry], str]] | None = None, **settings: Any
    ) -> FaultStack:
        proxies: dict[str, FaultProxy] = {}

        def through_proxy(name: str) -> Callable[[Registry], str]:
            def url(registry: Registry) -> str:
                proxies[name] = fault_proxy_factory(registry)
                return proxies[name].url

            return url

        fronts = {name: through_proxy(name) for name in (USE1, USW2, EUW1)}
        fronts.update(front or {})
        stack = start_stack(
            tmp_path / "stack",
            mosquitto_factory(),
            lambda _url: registry_factory(),
            notifications=False,
            front=fronts,
            **settings,
        )
        started.append(stack)
        return FaultStack(stack, proxies)

    yield start
    for stack in started:
        stack.stop()


def make_flaky(proxy: FaultProxy) -> list[Fault]:
    """FAULT_SHARE of the proxy's requests fail: 500/502/503, and 429 with Retry-After in
    seconds and as an HTTP-date. (A destination sends no bodies worth cutting: HEADs, upload
    and manifest PUTs; resets and truncations are injected at the source's blob downloads.)"""
    rules = [
        Fault.status_code(
            status,
            requests(),
            times=None,
            share=PER_RULE_SHARE,
            retry_after_seconds=retry_after,
            retry_after_http_date=http_date,
        )
        for status, retry_after, http_date in STATUS_FAULTS
    ]
    return [proxy.add(rule) for rule in rules]


def fault_counts(faults: list[Fault]) -> dict[str, int]:
    """How often each status fault fired, by status (and Retry-After form)."""
    counts: dict[str, int] = {}
    for fault in faults:
        name = f"{fault.status}" + (" retry-after" if fault.retry_after_seconds else "")
        name += " http-date" if fault.retry_after_http_date else ""
        counts[name] = counts.get(name, 0) + fault.injected
    return counts


def make_cutting(proxy: FaultProxy) -> list[Fault]:
    """SOURCE_CUT_SHARE of blob downloads end early: half truncated (FIN), half reset (RST)."""
    share = SOURCE_CUT_SHARE / 2
    return [
        proxy.add(Fault(FaultKind.TRUNCATE, blob_get(), times=None, share=share)),
        proxy.add(Fault(FaultKind.RESET, blob_get(), times=None, share=share)),
    ]


def test_burst_through_flaky_destinations_is_fully_replicated(
    fault_stack_factory: Callable[..., FaultStack],
) -> None:
    """With 20% of destination requests failing (5xx, 429 + Retry-After, resets) and source
    blobs cut short, a burst of 100 pushes reaches both destinations, digests identical, one
    COMPLETE job each, no corrupt blob stored, and /metrics counts the retries."""
    env = fault_stack_factory(concurrency=16)
    stack = env.stack
    images = tiny_images(BURST, repository="prod/flaky", prefix="f", seed=7)
    faults = {name: make_flaky(env.proxies[name]) for name in DESTINATIONS}
    source_faults = make_cutting(env.proxies[USE1])
    started = time.monotonic()
    push_and_publish(stack.source.url, stack.broker.port, images)
    states = wait_jobs_finished(env.journal, BURST * len(DESTINATIONS), timeout=BURST_SECONDS)
    elapsed = time.monotonic() - started
    metrics = stack.daemon.metrics()
    rows = JournalReader(stack.settings.journal_url).jobs()
    assert states == {JobState.COMPLETE.value: BURST * len(DESTINATIONS)}, states
    assert_one_complete_job_each(rows, images, DESTINATIONS)
    for name in DESTINATIONS:
        assert missing_at(stack.registries[name].url, images) == [], name
        assert corrupt_blobs(stack.registries[name]) == [], name
    injected = {name: sum(f.injected for f in faults[name]) for name in DESTINATIONS}
    seen = {name: env.proxies[name].requests_seen for name in DESTINATIONS}
    for name in DESTINATIONS:
        assert 0.1 < injected[name] / seen[name] < 0.3, (name, injected[name], seen[name])
        assert all(f.injected for f in faults[name]), [f.injected for f in faults[name]]
    assert all(f.injected for f in source_faults), [f.injected for f in source_faults]
    request_retries = metric_value(metrics, "replicator_registry_request_retries_total")
    job_retries = metric_value(metrics, "replicator_job_retries_total")
    assert request_retries > 0
    record_figures(
        "flaky_destinations",
        {
            "images": BURST,
            "jobs_complete": states[JobState.COMPLETE.value],
            "destination_requests": sum(seen.values()),
            "destination_faults_injected": sum(injected.values()),
            "faults_by_kind": {name: fault_counts(faults[name]) for name in DESTINATIONS},
            "source_blob_cuts": sum(f.injected for f in source_faults),
            "request_retries": request_retries,
            "job_retries": job_retries,
            "seconds": round(elapsed, 1),
            "lost": 0,
        },
    )


def test_dead_destination_waits_unreachable_while_the_other_completes(
    fault_stack_factory: Callable[..., FaultStack],
) -> None:
    """A destination that answers every request 503 is marked unreachable: its jobs wait with
    their attempts kept (only the attempt that found the outage is spent), /readyz names it,
    the healthy destination completes every image; once it answers, every job lands."""
    env = fault_stack_factory(max_attempts=DEAD_MAX_ATTEMPTS)
    stack = env.stack
    dead = env.proxies[EUW1].add(Fault.status_code(503, requests(), times=None))
    images = tiny_images(DEAD_IMAGES, repository="prod/dead", prefix="d", seed=11)
    push_and_publish(stack.source.url, stack.broker.port, images)
    reader = JournalReader(stack.settings.journal_url)

    def settled() -> bool:
        rows = reader.jobs()
        healthy = [row for row in rows if row.destination == USW2]
        waiting = [row for row in rows if row.destination == EUW1]
        return (
            len(healthy) == len(waiting) == DEAD_IMAGES
            and {row.state for row in healthy} == {JobState.COMPLETE}
            and all(row.state in CLAIMABLE_STATES for row in waiting)
        )

    wait_for(settled, timeout=DEAD_SECONDS, what="usw2 done and euw1's jobs waiting")
    ready = stack.daemon.get("/readyz")
    assert ready.status_code == 503
    assert "destination euw1 unreachable since" in ready.text
    rows = reader.jobs()
    waiting = [row for row in rows if row.destination == EUW1]
    assert missing_at(stack.registries[USW2].url, images) == []
    assert sum(row.attempts for row in waiting) == 1, [row.attempts for row in waiting]
    assert all("503" in (row.failure_reason or "503") for row in waiting)
    assert stack.registries[EUW1].repositories() == []
    refused = dead.injected
    metrics = stack.daemon.metrics()
    assert metric_value(metrics, "replicator_jobs_finished_total", result="failed") == 0
    assert metric_value(metrics, "replicator_destination_reachable", destination=EUW1) == 0
    env.proxies[EUW1].clear()
    wait_jobs_finished(env.journal, DEAD_IMAGES * len(DESTINATIONS), timeout=DEAD_SECONDS)
    rows = reader.jobs()
    assert {row.state for row in rows} == {JobState.COMPLETE}
    assert missing_at(stack.registries[EUW1].url, images) == []
    record_figures(
        "dead_destination",
        {
            "images": DEAD_IMAGES,
            "max_attempts": DEAD_MAX_ATTEMPTS,
            "healthy_complete": DEAD_IMAGES,
            "dead_waiting": len(waiting),
            "attempts_spent_while_dead": sum(row.attempts for row in waiting),
            "dead_requests_refused": refused,
            "request_retries": metric_value(metrics, "replicator_registry_request_retries_total"),
            "lost": 0,
        },
    )


def test_slow_destination_does_not_delay_the_fast_one(
    fault_stack_factory: Callable[..., FaultStack],
) -> None:
    """With every request to one destination held SLOW_STALL_SECONDS (over 100x a loopback
    request), every job of the other destination is claimed by a worker before the first slow
    job completes: the slow destination holds at most per_registry of the workers, so the fast
    destination's jobs never wait for it. (Claims, not completions: on a loaded machine the
    fast jobs' own CPU time may stretch past the slow job's stalls.)"""
    env = fault_stack_factory(concurrency=SLOW_CONCURRENCY, per_registry=SLOW_PER_REGISTRY)
    stack = env.stack
    env.proxies[EUW1].add(Fault.stall(requests(), SLOW_STALL_SECONDS, times=1_000_000))
    images = tiny_images(SLOW_IMAGES, repository="prod/slow", prefix="s", seed=13)
    push_and_publish(stack.source.url, stack.broker.port, images)
    wait_jobs_finished(env.journal, SLOW_IMAGES * len(DESTINATIONS), timeout=BURST_SECONDS)
    rows = JournalReader(stack.settings.journal_url).jobs()
    assert_one_complete_job_each(rows, images, DESTINATIONS)
    fast_rows = [row for row in rows if row.destination == USW2]
    fast = sorted(row.finished_at for row in fast_rows if row.finished_at)
    fast_claims = sorted(row.started_at for row in fast_rows if row.started_at)
    slow = sorted(row.finished_at for row in rows if row.destination == EUW1 and row.finished_at)
    assert len(fast) == len(fast_claims) == len(slow) == SLOW_IMAGES
    assert fast_claims[-1] < slow[0], (fast_claims, slow)
    start = min(fast_claims[0], fast[0], slow[0])
    fast_span = (fast[-1] - start).total_seconds()
    slow_span = (slow[-1] - start).total_seconds()
    record_figures(
        "slow_destination",
        {
            "images": SLOW_IMAGES,
            "stall_seconds_per_request": SLOW_STALL_SECONDS,
            "fast_destination_all_claimed_after_seconds": round(
                (fast_claims[-1] - start).total_seconds(), 2
            ),
            "slow_destination_first_done_after_seconds": round(
                (slow[0] - start).total_seconds(), 2
            ),
            "fast_destination_done_after_seconds": round(fast_span, 2),
            "slow_destination_done_after_seconds": round(slow_span, 2),
            "lost": 0,
        },
    )
