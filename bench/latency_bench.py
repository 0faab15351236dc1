"""Benchmark the daemon: push-to-visible latency, and a burst of 1,000 pushes with peak RSS.

    .venv/bin/python bench/latency_bench.py [--pushes 200] [--burst 1000]

Latency: use1 (docker-registry, notifications to `replicator bridge`) -> mosquitto ->
`replicator run` -> usw2 and euw1. Each push is a fresh image of 4 layers totalling 1 MiB
(distinct bytes, so every push really copies); the clock starts when the source answered the
manifest PUT and stops when both destinations have the manifest: each destination reports its
push by webhook to bench/arrivals.py (no polling load on the registries measured), and one HEAD
per destination confirms it is served (polled only if not yet). Pushes run one after the other;
p50/p95/p99/max are reported.

Burst: a second stack whose source has notifications off; 1,000 distinct small images are
pushed first, then their 1,000 distribution envelopes are published on the bus at once. Time
from the first publish to 2,000 jobs COMPLETE, and the daemon's peak RSS (VmHWM). Every
destination manifest is checked afterwards. Prints a table; writes
bench/results/latency-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.arrivals import Arrivals
from bench.corpus import MIB
from bench.runners import compile_project
from replicator import logs
from replicator.domain.images.media import MANIFEST_ACCEPT
from replicator.journal import JobRow
from tests.support.daemon import (
    DESTINATIONS,
    USE1,
    JournalReader,
    Stack,
    envelope,
    manifest_digest,
    metric_value,
    start_stack,
)
from tests.support.images import OCI_MANIFEST, BuiltImage, LayerSpec, OCILayout
from tests.support.layout_push import LayoutPusher
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.registry_server import Registry

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Issue 4's targets, printed beside the figures.
TARGET_P50_MS = 150.0
TARGET_P99_MS = 1000.0
TARGET_RSS_MIB = 200.0
# The small image: 4 layers, 1 MiB in total.
LAYERS = 4
LAYER_BYTES = MIB // LAYERS
# Between HEADs when a manifest whose push event arrived is not served yet (rare: the tag is
# linked just after the event): 5 ms resolution for those few polls.
POLL_SECONDS = 0.005
# A push not visible by then is counted as lost and fails the run.
VISIBLE_WITHIN_SECONDS = 30.0
# The burst must finish within this, else the run fails (and says how far it got).
BURST_WITHIN_SECONDS = 600.0
# Threads pushing the burst's images to the source before the envelopes are published.
PUSH_THREADS = 4
# Workers of the daemon under test: the config default.
CONCURRENCY = 16


@dataclass(frozen=True)
class LatencyFigures:
    """Push-to-visible latency over both destinations, in milliseconds."""

    pushes: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    lost: int
    source_push_p50_ms: float
    event_to_journal_p50_ms: float
    journal_to_claim_p50_ms: float
    copy_p50_ms: float


@dataclass(frozen=True)
class BurstFigures:
    """The burst: how many, how long, how much memory, whether all arrived."""

    images: int
    jobs: int
    publish_seconds: float
    journalled_seconds: float
    total_seconds: float
    jobs_per_second: float
    peak_rss_mib: float
    verified: bool


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def _peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stack(
    workdir: Path,
    name: str,
    registries: list[Registry],
    *,
    notifications: bool,
    arrivals: Arrivals | None = None,
) -> tuple[Stack, Mosquitto]:
    folder = workdir / name
    (folder / "mqtt").mkdir(parents=True)
    broker = Mosquitto(folder / "mqtt")
    # start_stack starts use1 (with the bridge's URL), then the destinations in this order.
    destinations = iter(DESTINATIONS)

    def start_registry(url: str | None) -> Registry:
        if url is None and arrivals is not None:
            url = arrivals.url(next(destinations))
        registry = Registry(notifications_url=url)
        registries.append(registry)
        return registry

    stack = start_stack(
        folder / "stack",
        broker,
        start_registry,
        notifications=notifications,
        concurrency=CONCURRENCY,
        per_registry=8,
    )
    return stack, broker


def _wait_visible(
    client: httpx.Client, arrivals: Arrivals, urls: dict[str, str], tag: str
) -> float:
    """When the last destination had the manifest: its push event's arrival, once a HEAD
    confirmed the tag is served (else the time a poll first saw it)."""
    arrived = arrivals.wait(list(urls), tag, VISIBLE_WITHIN_SECONDS)
    deadline = time.monotonic() + VISIBLE_WITHIN_SECONDS
    seen: list[float] = []
    for name, url in urls.items():
        confirmed = arrived[name]
        while client.head(url).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not served {VISIBLE_WITHIN_SECONDS}s after its event")
            time.sleep(POLL_SECONDS)
            confirmed = time.monotonic()
        seen.append(confirmed)
    return max(seen)


def measure_latency(
    stack: Stack, layout: OCILayout, pushes: int, arrivals: Arrivals
) -> LatencyFigures:
    """Push `pushes` fresh 1 MiB images one by one; time each until both destinations have it."""
    latencies: list[float] = []
    push_times: list[float] = []
    lost = 0
    pusher = LayoutPusher(layout.path, stack.source.url, "prod/latency")
    headers = {"accept": MANIFEST_ACCEPT}
    try:
        with httpx.Client(headers=headers, timeout=10.0) as client:
            for number in range(pushes):
                tag = f"l{number}"
                image = layout.image(
                    tag,
                    [
                        LayerSpec(100_000 + number * LAYERS + k, LAYER_BYTES, False)
                        for k in range(4)
                    ],
                    label=tag,
                )
                started = time.monotonic()
                for digest in (image.config_digest, *image.layer_digests):
                    assert digest is not None
                    pusher.push_blob(digest)
                data = (layout.path / "blobs" / "sha256" / image.digest.split(":")[1]).read_bytes()
                pusher.put_manifest(tag, data, OCI_MANIFEST)
                pushed = time.monotonic()
                push_times.append((pushed - started) * 1000)
                urls = {
                    d: f"{stack.registries[d].url}/v2/prod/latency/manifests/{tag}"
                    for d in DESTINATIONS
                }
                try:
                    visible = _wait_visible(client, arrivals, urls, tag)
                except TimeoutError as exc:
                    print(f"  push {number}: {exc}", flush=True)
                    lost += 1
                    continue
                latencies.append((visible - pushed) * 1000)
                if (number + 1) % 50 == 0:
                    print(
                        f"  {number + 1} pushes, p50 so far {statistics.median(latencies):.0f} ms"
                    )
    finally:
        pusher.close()
    ordered = sorted(latencies)
    stages = _stages(JournalReader(stack.settings.journal_url).jobs())
    return LatencyFigures(
        pushes=pushes,
        p50_ms=round(_percentile(ordered, 0.50), 1),
        p95_ms=round(_percentile(ordered, 0.95), 1),
        p99_ms=round(_percentile(ordered, 0.99), 1),
        max_ms=round(ordered[-1], 1),
        mean_ms=round(statistics.fmean(ordered), 1),
        lost=lost,
        source_push_p50_ms=round(statistics.median(push_times), 1),
        **stages,
    )


def _stages(rows: list[JobRow]) -> dict[str, float]:
    """Medians of where a job's time went: the registry's event timestamp -> journalled
    (webhook, bridge, broker, daemon), journalled -> claimed (dispatch), claimed -> COMPLETE."""
    spans: dict[str, list[float]] = {
        "event_to_journal_p50_ms": [],
        "journal_to_claim_p50_ms": [],
        "copy_p50_ms": [],
    }
    for row in rows:
        if row.pushed_at is None or row.started_at is None or row.finished_at is None:
            continue
        spans["event_to_journal_p50_ms"].append((row.created_at - row.pushed_at).total_seconds())
        spans["journal_to_claim_p50_ms"].append((row.started_at - row.created_at).total_seconds())
        spans["copy_p50_ms"].append((row.finished_at - row.started_at).total_seconds())
    return {name: round(statistics.median(v) * 1000, 1) if v else 0.0 for name, v in spans.items()}


def _push_burst(layout: OCILayout, registry: Registry, images: list[BuiltImage]) -> None:
    local = threading.local()

    def push(image: BuiltImage) -> None:
        if not hasattr(local, "pusher"):
            local.pusher = LayoutPusher(layout.path, registry.url, "prod/burst")
        assert image.tag is not None
        local.pusher.push_tag(image.tag)

    with ThreadPoolExecutor(PUSH_THREADS) as pool:
        list(pool.map(push, images))


def _publish_all(port: int, payloads: list[bytes]) -> None:
    """Publish every payload at QoS 1 on one connection; return once all are acknowledged."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-burst", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(f"registry/{USE1}/events", p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()


def measure_burst(stack: Stack, layout: OCILayout, count: int) -> BurstFigures:
    """Push `count` images (notifications off), publish their envelopes at once, time the
    daemon until every job is COMPLETE; peak RSS of the daemon; verify the destinations."""
    images = [
        layout.image(f"b{n}", [LayerSpec(1, 4096), LayerSpec(200_000 + n, 2048)], label=f"b{n}")
        for n in range(count)
    ]
    started = time.monotonic()
    _push_burst(layout, stack.source, images)
    print(f"  {count} images pushed to the source in {time.monotonic() - started:.1f}s")
    payloads = [
        envelope("prod/burst", i.digest, tag=i.tag, media_type=OCI_MANIFEST) for i in images
    ]
    jobs = count * len(DESTINATIONS)
    started = time.monotonic()
    _publish_all(stack.broker.port, payloads)
    published = time.monotonic() - started
    deadline = started + BURST_WITHIN_SECONDS
    complete = 0.0
    while time.monotonic() < deadline:
        text = stack.daemon.metrics()
        complete = metric_value(text, "replicator_jobs", state="complete")
        if complete >= jobs:
            break
        time.sleep(0.1)
    total = time.monotonic() - started
    rss = _peak_rss_mib(stack.daemon.pid)
    rows = JournalReader(stack.settings.journal_url).jobs()
    # Publish start -> the last job journalled: how fast the daemon takes events off the bus.
    last_created = max(row.created_at for row in rows).timestamp()
    journalled = last_created - (time.time() - (time.monotonic() - started))
    verified = complete >= jobs and all(
        manifest_digest(stack.registries[d].url, "prod/burst", i.tag or "") == i.digest
        for i in images
        for d in DESTINATIONS
    )
    if complete < jobs:
        print(f"  only {complete:.0f} of {jobs} jobs COMPLETE after {total:.0f}s")
    return BurstFigures(
        images=count,
        jobs=jobs,
        publish_seconds=round(published, 2),
        journalled_seconds=round(journalled, 2),
        total_seconds=round(total, 2),
        jobs_per_second=round(jobs / total, 1),
        peak_rss_mib=round(rss, 1),
        verified=verified,
    )


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> int:
    """Run both measurements, print them beside the targets, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pushes", type=int, default=200, help="latency pushes (default 200)")
    parser.add_argument("--burst", type=int, default=1000, help="burst images (default 1000)")
    args = parser.parse_args()
    compile_project()
    logs.configure(level="warning")  # the journal reader's info lines would clutter the table
    workdir = Path(tempfile.mkdtemp(prefix="latency-bench-"))
    arrivals = Arrivals()
    registries: list[Registry] = []
    brokers: list[Mosquitto] = []
    stacks: list[Stack] = []
    try:
        stack, broker = _stack(
            workdir, "latency", registries, notifications=True, arrivals=arrivals
        )
        stacks.append(stack)
        brokers.append(broker)
        print(f"latency: {args.pushes} pushes of 4 x {LAYER_BYTES // 1024} KiB layers", flush=True)
        layout = OCILayout(workdir / "latency-layout")
        latency = measure_latency(stack, layout, args.pushes, arrivals)
        latency_rss = _peak_rss_mib(stack.daemon.pid)
        stack.stop()
        stack, broker = _stack(workdir, "burst", registries, notifications=False)
        stacks.append(stack)
        brokers.append(broker)
        print(f"burst: {args.burst} images published at once", flush=True)
        burst = measure_burst(stack, OCILayout(workdir / "burst-layout"), args.burst)
        stack.stop()
        print()
        print(f"{'figure':<34}{'measured':>12}{'target':>12}  verdict")
        p50, p99, rss = latency.p50_ms, latency.p99_ms, burst.peak_rss_mib
        rows = [
            ("latency p50 (ms)", p50, f"< {TARGET_P50_MS:.0f}", p50 < TARGET_P50_MS),
            ("latency p95 (ms)", latency.p95_ms, "", True),
            ("latency p99 (ms)", p99, f"< {TARGET_P99_MS:.0f}", p99 < TARGET_P99_MS),
            ("latency max (ms)", latency.max_ms, "", True),
            ("latency pushes lost", latency.lost, "0", latency.lost == 0),
            ("  p50 event -> journal (ms)", latency.event_to_journal_p50_ms, "", True),
            ("  p50 journal -> claim (ms)", latency.journal_to_claim_p50_ms, "", True),
            ("  p50 copy, per job (ms)", latency.copy_p50_ms, "", True),
            ("  p50 same image pushed to source", latency.source_push_p50_ms, "", True),
            ("daemon peak RSS, latency run (MiB)", round(latency_rss, 1), "", True),
            ("burst envelopes published (s)", burst.publish_seconds, "", True),
            ("burst all jobs journalled (s)", burst.journalled_seconds, "", True),
            ("burst total (s)", burst.total_seconds, "", True),
            ("burst jobs/s", burst.jobs_per_second, "", True),
            ("burst all replicated", burst.verified, "True", burst.verified),
            ("daemon peak RSS, burst (MiB)", rss, f"< {TARGET_RSS_MIB:.0f}", rss < TARGET_RSS_MIB),
        ]  # fmt: skip
        for name, value, target, ok in rows:
            print(f"{name:<34}{value!s:>12}{target:>12}  {_verdict(ok)}")
        RESULTS_DIR.mkdir(exist_ok=True)
        output = RESULTS_DIR / f"latency-{time.strftime('%Y%m%dT%H%M%S')}.json"
        output.write_text(
            json.dumps(
                {
                    "latency": asdict(latency),
                    "latency_run_peak_rss_mib": round(latency_rss, 1),
                    "burst": asdict(burst),
                    "targets": {
                        "p50_ms": TARGET_P50_MS,
                        "p99_ms": TARGET_P99_MS,
                        "rss_mib": TARGET_RSS_MIB,
                    },
                },
                indent=2,
            )
        )
        print(f"results: {output}")
        return 0 if latency.lost == 0 and burst.verified else 1
    finally:
        for stack in stacks:
            stack.stop()
        for broker in brokers:
            broker.cleanup()
        for registry in registries:
            registry.cleanup()
        arrivals.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
