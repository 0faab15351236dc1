"""The daemon's metrics: names by Prometheus's guide, per-registry requests, served from memory."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from replicator.daemon import api
from replicator.daemon.http_messages import Request
from replicator.daemon.metrics import Metrics, error_kind
from replicator.domain.jobs import JobKey, JobState
from replicator.engine.job_queue import JobEnd
from replicator.errors import RegistryError, TransportError
from replicator.journal.store import Journal
from replicator.registry.pool import ClientPool
from replicator.registry.resumed import resumed
from replicator.registry.retry import RetryPolicy, retried
from replicator.registry.settings import RegistrySettings
from tests.support.ports import free_port
from tests.support.scripted_http import ScriptedServer

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "a" * 64
# Every family the daemon exposes of its own (README "Metrics and what to alert on" lists them);
# a counter's family name is given without `_total`, as the parser reports it.
OWN_FAMILIES = {
    "replicator_events",
    "replicator_jobs_finished",
    "replicator_job_retries",
    "replicator_blobs",
    "replicator_copied_bytes",
    "replicator_replication_latency_seconds",
    "replicator_registry_requests",
    "replicator_registry_request_errors",
    "replicator_registry_request_retries",
    "replicator_blob_resumes",
    "replicator_registry_request_duration_seconds",
    "replicator_jobs",
    "replicator_journal_backlog",
    "replicator_events_deferred",
    "replicator_oldest_unreplicated_push_age_seconds",
    "replicator_fleet_intake",
    "replicator_fleet_chores",
    "replicator_broker_connected",
    "replicator_build_info",
    "replicator_transfers_cut",
    "replicator_source_slow",
    "replicator_destination_reachable",
}
# Labels whose values are names the operator chose (registry names, hosts): any case.
NAME_LABELS = {"destination", "host", "version"}
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def families(metrics: Metrics) -> dict[str, Metric]:
    """The exposition, parsed by prometheus_client's own parser, by family name."""
    text = metrics.render().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def host_of(server: ScriptedServer) -> str:
    """The `host:port` a client for `server` is created with."""
    return server.url.removeprefix("http://")


async def exercised() -> Metrics:
    """A Metrics fed by real requests: answered, redirected, refused, and retried."""
    metrics = Metrics()
    dead = f"127.0.0.1:{free_port()}"
    async with ScriptedServer() as registry, ClientPool(observer=metrics) as pool:
        client = pool.client(RegistrySettings(host=host_of(registry)))
        await client.request("GET", "/hello", scope="repository:r:pull")
        await client.request("GET", "/redirect?to=/hello", scope="repository:r:pull")
        unreachable = pool.client(RegistrySettings(host=dead))
        calls = 0

        async def flaky() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                await unreachable.request("GET", "/v2/", scope="")

        await retried(flaky)
    await metrics.job_ended(end_of("use1", "COMPLETE"))
    await metrics.job_ended(end_of("use1", "RETRY_WAIT"))
    metrics.observe_blob("copied", 1234)
    resumed("127.0.0.1:5000", "upload")
    metrics.observe_pace("127.0.0.1:5000", 3, True)
    metrics.refresh_journal({("PENDING", "use1"): 2}, 2, {"use1": datetime.now(UTC)})
    return metrics


def end_of(destination: str, state: str) -> JobEnd:
    """A JobEnd as the runner reports it, for a push three seconds ago."""
    key = JobKey("src", "app", DIGEST, "v1", destination)
    return JobEnd(key, JobState(state), pushed_at=datetime.now(UTC) - timedelta(seconds=3))


class TestNames:
    async def test_exposition_has_the_documented_families(self) -> None:
        """Parsed with prometheus_client's parser, the families are the documented ones."""
        parsed = families(await exercised())
        own = {name for name in parsed if name.startswith("replicator_")}
        assert own == OWN_FAMILIES

    async def test_readme_documents_every_family(self) -> None:
        """Each family is named in the README's metrics section."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        section = readme.split("## Metrics and what to alert on", 1)[1].split("\n## ", 1)[0]
        for name in OWN_FAMILIES:
            assert name in section, name

    async def test_naming_guide(self) -> None:
        """snake_case names; counters end in _total with the unit before it; no unit-less time."""
        for family in families(await exercised()).values():
            assert SNAKE.match(family.name), family.name
            for sample in family.samples:
                if family.type == "counter" and not sample.name.endswith("_created"):
                    assert sample.name.endswith("_total"), sample.name
                assert not sample.name.endswith("_bytes_total") or "_copied_" in sample.name
        assert "replicator_bytes_copied" not in families(Metrics())

    async def test_label_values_in_one_case(self) -> None:
        """Every label value but names (hosts, registries) is lower case snake_case or a number."""
        for name, family in families(await exercised()).items():
            if not name.startswith("replicator_"):
                continue
            for sample in family.samples:
                for label, value in sample.labels.items():
                    if label in NAME_LABELS or label == "le" or value == "":
                        continue
                    assert SNAKE.match(value) or value.isdigit(), (name, label, value)

    async def test_process_and_python_collectors(self) -> None:
        """process_* and python_* families are exposed, as on the default registry."""
        names = set(families(Metrics()))
        assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= names
        assert "python_info" in names
        assert any(name.startswith("python_gc_") for name in names)


class TestRegistryRequests:
    async def test_requests_counted_per_host_and_code(self) -> None:
        """Each exchange is counted by host, method and status; a redirect hop counts too."""
        metrics = Metrics()
        async with ScriptedServer() as registry, ClientPool(observer=metrics) as pool:
            client = pool.client(RegistrySettings(host=host_of(registry)))
            await client.request("GET", "/hello", scope="repository:r:pull")
            await client.request("GET", "/redirect?to=/hello", scope="repository:r:pull")
        samples = {
            (s.labels["method"], s.labels["code"]): s.value
            for s in families(metrics)["replicator_registry_requests"].samples
            if s.name.endswith("_total") and s.labels["host"] == host_of(registry)
        }
        assert samples == {("get", "200"): 2, ("get", "307"): 1}
        durations = families(metrics)["replicator_registry_request_duration_seconds"].samples
        count = [s for s in durations if s.name.endswith("_count")]
        assert [s.value for s in count] == [3]

    async def test_unreachable_registry_is_an_error_of_its_host(self) -> None:
        """No answer counts a transport error for the host (one try: one error), and the error
        names that host."""
        metrics = Metrics()
        dead = f"127.0.0.1:{free_port()}"
        async with ClientPool(observer=metrics) as pool:
            client = pool.client(RegistrySettings(host=dead, retry=RetryPolicy(attempts=1)))
            with pytest.raises(TransportError) as caught:
                await client.request("GET", "/v2/", scope="")
        assert caught.value.host == dead
        errors = families(metrics)["replicator_registry_request_errors"].samples
        assert [(s.labels, s.value) for s in errors if s.name.endswith("_total")] == [
            ({"host": dead, "kind": "transport"}, 1.0)
        ]

    async def test_error_status_names_its_host(self) -> None:
        """A registry's error answer raised by the client names the host it came from."""
        async with ScriptedServer() as registry, ClientPool() as pool:
            client = pool.client(RegistrySettings(host=host_of(registry)))
            with pytest.raises(RegistryError) as caught:
                await client.request("POST", "/redirect?to=/echo", scope="", content=b"x")
        assert caught.value.host == host_of(registry)

    async def test_retries_counted_per_host(self) -> None:
        """A retried request is counted under the host that failed and its error code."""
        metrics = await exercised()
        retries = families(metrics)["replicator_registry_request_retries"].samples
        (sample,) = [s for s in retries if s.name.endswith("_total")]
        assert sample.labels["code"] == "transport_error"
        assert sample.labels["host"].startswith("127.0.0.1:")

    async def test_resumes_counted_per_host_and_direction(self) -> None:
        """A resumed transfer is counted under its registry and its direction."""
        samples = families(await exercised())["replicator_blob_resumes"].samples
        (sample,) = [s for s in samples if s.name.endswith("_total")]
        assert sample.labels == {"host": "127.0.0.1:5000", "direction": "upload"}
        assert sample.value == 1

    @pytest.mark.parametrize(
        ("status", "kind"),
        [(None, "transport"), (429, "throttled"), (500, "server"), (503, "server"),
         (404, None), (401, None), (200, None), (307, None)],
    )  # fmt: skip
    def test_error_kind(self, status: int | None, kind: str | None) -> None:
        """No answer, 429 and 5xx are registry failures; 2xx, 3xx and 4xx are not."""
        assert error_kind(status) == kind


class TestJournalGauges:
    def test_recovery_point_age(self) -> None:
        """The oldest unreplicated push's age is computed at scrape time, 0 when none waits."""
        metrics = Metrics()
        pushed = datetime(2026, 1, 1, tzinfo=UTC)
        metrics.refresh_journal(
            {("PENDING", "use1"): 1, ("COMPLETE", "euw1"): 4}, 1, {"use1": pushed}
        )
        text = metrics.render(now=pushed + timedelta(seconds=90)).decode()
        ages = {
            s.labels["destination"]: s.value
            for f in text_string_to_metric_families(text)
            if f.name == "replicator_oldest_unreplicated_push_age_seconds"
            for s in f.samples
        }
        assert ages == {"use1": 90.0, "euw1": 0.0}

    def test_declared_destinations_have_every_series_at_zero(self) -> None:
        """Every declared destination shows each jobs-finished result, its retries and a
        recovery point of 0 before anything happened, and keeps them through a refresh (an
        `increase()` alert then sees the first failure)."""
        metrics = Metrics()
        metrics.declare_destinations(["usw2", "euw1"])
        metrics.refresh_journal({}, 0, {})
        families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
        finished = {
            (s.labels["destination"], s.labels["result"], s.value)
            for s in families["replicator_jobs_finished"].samples
            if s.name.endswith("_total")
        }
        assert finished == {
            (d, r, 0.0) for d in ("usw2", "euw1") for r in ("complete", "failed", "superseded")
        }
        ages = {
            s.labels["destination"]: s.value
            for s in families["replicator_oldest_unreplicated_push_age_seconds"].samples
        }
        assert ages == {"usw2": 0.0, "euw1": 0.0}
        retries = families["replicator_job_retries"].samples
        assert {s.labels["destination"] for s in retries if s.name.endswith("_total")} == {
            "usw2",
            "euw1",
        }

    async def test_scrape_reads_memory_not_the_journal(self, tmp_path: Path) -> None:
        """After one refresh, /metrics answers from memory even with the journal closed."""
        journal = await Journal.open(f"sqlite:///{tmp_path}/journal.db", claimer="test")
        pushed = datetime.now(UTC) - timedelta(minutes=5)
        await journal.add_jobs([JobKey("src", "app", DIGEST, "v1", "use1")], pushed_at=pushed)
        metrics = Metrics()

        class Served:
            config = None

            def __init__(self) -> None:
                self.journal: Journal | None = journal
                self.metrics = metrics

        served = Served()
        await api.refresh_journal_gauges(cast("api.Served", served))
        await journal.close()
        served.journal = None
        (route,) = [r for r in api.routes(cast("api.Served", served)) if r.path == "/metrics"]
        response = await route.handler(cast("Request", None))
        text = response.body.decode()
        by_name = {f.name: f for f in text_string_to_metric_families(text)}
        jobs = by_name["replicator_jobs"].samples
        assert [(s.labels, s.value) for s in jobs] == [
            ({"state": "pending", "destination": "use1"}, 1.0)
        ]
        (age,) = by_name["replicator_oldest_unreplicated_push_age_seconds"].samples
        assert age.value >= 300


class TestBridgeExposition:
    def test_bridge_has_the_standard_collectors(self) -> None:
        """The bridge's /metrics has process_* and python_* too, no *_created series, and its
        own families named by the guide."""
        from replicator.daemon.bridge_metrics import BridgeMetrics, Outcome

        metrics = BridgeMetrics(lambda: True)
        metrics.count("use1", "distribution", Outcome.PUBLISHED)
        text = metrics.render().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"process_cpu_seconds", "python_info"} <= names
        assert not [n for n in names if n.endswith("_created")]
        own = {n for n in names if n.startswith("replicator_")}
        assert own == {
            "replicator_bridge_requests",
            "replicator_bridge_publish_duration_seconds",
            "replicator_bridge_broker_connected",
        }


@pytest.mark.parametrize(
    ("took", "pause"),
    [
        (0.0, api.JOURNAL_GAUGES_MIN_SECONDS),
        (0.002, api.JOURNAL_GAUGES_MIN_SECONDS),
        (0.05, api.JOURNAL_GAUGES_MIN_SECONDS),
        (0.181, 0.181 / api.JOURNAL_GAUGES_MAX_SHARE - 0.181),
        (1.8, 1.8 / api.JOURNAL_GAUGES_MAX_SHARE - 1.8),
    ],
)
def test_gauge_readings_take_a_bounded_share_of_the_journal(took: float, pause: float) -> None:
    """Fast readings of the journal's gauges repeat at most once a second; slow ones (a table of
    millions of jobs) are spaced so that they take at most JOURNAL_GAUGES_MAX_SHARE of its time."""
    assert api.gauge_pause(took) == pytest.approx(pause)
    assert took / (took + api.gauge_pause(took)) <= api.JOURNAL_GAUGES_MAX_SHARE + 1e-9


class TestDaemonGauges:
    def test_broker_connected_read_at_scrape(self) -> None:
        """replicator_broker_connected follows the broker's state at each scrape."""
        metrics = Metrics()
        state = {"connected": False}
        metrics.watch_broker(lambda: state["connected"])
        assert "replicator_broker_connected 0.0" in metrics.render().decode()
        state["connected"] = True
        assert "replicator_broker_connected 1.0" in metrics.render().decode()

    def test_echo_series_start_at_zero(self) -> None:
        """Both echo reasons have a replicator_events_total series at 0 before any event."""
        text = Metrics().render().decode()
        for reason in ("own_write", "replica_agent"):
            assert f'replicator_events_total{{outcome="echo",reason="{reason}"}} 0.0' in text

    def test_build_info_names_the_version(self) -> None:
        """replicator_build_info is 1 with this package's version as its label."""
        from replicator import __version__

        text = Metrics().render().decode()
        assert f'replicator_build_info{{version="{__version__}"}} 1.0' in text
