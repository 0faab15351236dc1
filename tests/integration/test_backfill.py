"""`replicator backfill` against real registries: two destinations (one denying by policy),
HEAD-only re-runs, dry runs that write nothing, interrupted runs resumed."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from replicator.cli import EXIT_JOURNAL_UNUSABLE
from replicator.config.loading import Config, load_config
from replicator.config.sites import sites_of
from replicator.daemon.reconcile import reconcile_forever
from replicator.domain.events.echoes import REPLICA_USER_AGENT
from replicator.domain.images.media import MANIFEST_ACCEPT
from replicator.domain.jobs import FailureCode, JobKey, JobState
from replicator.domain.routing import Site
from replicator.engine.copier import Copier
from replicator.engine.runner import JobRunner
from replicator.journal.claimers import open_journal
from replicator.journal.store import Journal
from replicator.registry.connections import USER_AGENT
from replicator.registry.pool import ClientPool
from replicator.scan.backfill_run import run_backfill
from replicator.scan.reconcile import reconcile_once
from replicator.scan.scanning import ScanOptions
from tests.support import skopeo
from tests.support.daemon import (
    EUW1,
    PROJECT_ROOT,
    USE1,
    USW2,
    DaemonSettings,
    JournalReader,
    replicator_cli,
    replicator_command,
    topology,
    write_config,
)
from tests.support.fault_proxy import Fault, FaultProxy, blob_get
from tests.support.images import BuiltImage, LayerSpec, OCILayout
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.stack_fixtures import with_delete_replication
from tests.support.terminal import last_line, on_terminal

pytestmark = pytest.mark.integration

# The access log line of a request: method and path, then status; user agent last.
ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) .*"(?P<agent>[^"]*)"$'
)
# How long a test waits for a backfill process to reach a state in the journal, and how often
# it looks: the runs here take a second or two on loopback.
JOURNAL_WAIT_SECONDS = 30.0
JOURNAL_POLL_SECONDS = 0.05
# Images of the world: repository -> tags; prod/ reaches both destinations, dev/ only usw2.
IMAGES = {"prod/app": ("v1", "v2"), "prod/web": ("1.0",), "dev/tool": ("1",)}


@dataclass
class World:
    """A source (use1) with images, two empty destinations, and a config naming them."""

    registries: dict[str, Registry]
    config: Path
    journal_url: str
    layout: OCILayout
    images: dict[tuple[str, str], BuiltImage]

    @property
    def source(self) -> Registry:
        """The source registry."""
        return self.registries[USE1]

    def push(self, repository: str, tag: str, *, seed: int) -> BuiltImage:
        """Build a small image and push it to the source as repository:tag."""
        name = f"{repository.replace('/', '-')}-{tag}-{seed}"
        image = replace(self.layout.image(name, [LayerSpec(seed=seed, size=2048)]), tag=tag)
        skopeo.push_layout(self.layout.path, name, f"{self.source.host}/{repository}:{tag}")
        self.images[(repository, tag)] = image
        return image

    def backfill(self, *args: str) -> dict[str, Any]:
        """Run `replicator backfill ARGS --json`; its JSON (exit code under "exit")."""
        result = replicator_cli(self.config, "backfill", *args, "--json")
        assert result.returncode in (0, 1), result.stderr
        doc: dict[str, Any] = json.loads(result.stdout)
        assert (doc["schema"], doc["command"]) == (1, "backfill")  # README "JSON output"
        return doc | {"exit": result.returncode, "stderr": result.stderr}

    def jobs(self) -> list[Any]:
        """Every job in the journal."""
        return JournalReader(self.journal_url).jobs()

    def wait_for_jobs(self, ready: Callable[[list[Any]], bool]) -> bool:
        """Poll the journal until `ready(jobs)`; whether it came within JOURNAL_WAIT_SECONDS."""
        deadline = time.monotonic() + JOURNAL_WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.journal_exists() and ready(self.jobs()):
                return True
            time.sleep(JOURNAL_POLL_SECONDS)
        return False

    def journal_exists(self) -> bool:
        """Whether the run created the journal yet (it opens it only once it has work)."""
        return Path(self.journal_url.removeprefix("sqlite:///")).exists()


def build_world(
    tmp_path: Path,
    registry_factory: RegistryFactory,
    *,
    delete_replication: bool = False,
    reconcile_interval: float = 0.0,
    **settings: Any,
) -> World:
    """Start three registries, push IMAGES to the source, write the config."""
    registries = {name: registry_factory() for name in (USE1, USW2, EUW1)}
    journal_url = f"sqlite:///{tmp_path / 'journal.db'}"
    specs = topology({name: r.url for name, r in registries.items()})
    if delete_replication:
        specs = [with_delete_replication(spec) for spec in specs]
    options = DaemonSettings(
        broker_port=settings.pop("broker_port", 1883),
        journal_url=journal_url,
        client_id=f"replicator-{tmp_path.name}",
        **settings,
    )
    config = write_config(tmp_path, specs, options)
    if reconcile_interval:
        with config.open("a") as file:
            file.write(f"[reconcile]\ninterval = {reconcile_interval}\n")
    world = World(registries, config, journal_url, OCILayout(tmp_path / "layout"), {})
    for seed, (repository, tag) in enumerate(
        ((r, t) for r, tags in IMAGES.items() for t in tags), start=1
    ):
        world.push(repository, tag, seed=seed)
    return world


def requests_by(registry: Registry, *, since: int = 0) -> list[tuple[str, str]]:
    """(method, path) of the requests replicator made to `registry`, from log line `since`."""
    found = []
    for line in registry.log_text().splitlines()[since:]:
        match = ACCESS_LINE.search(line)
        # Replication's requests (backfill, the daemon) say so (domain/events/echoes.py); a pool
        # made here sends the plain one.
        if match and match["agent"] in (USER_AGENT, REPLICA_USER_AGENT):
            found.append((match["method"], match["path"]))
    return found


def log_length(registry: Registry) -> int:
    """Lines in the registry's log so far."""
    return len(registry.log_text().splitlines())


def assert_replicated(world: World, destination: str, images: list[tuple[str, str]]) -> None:
    """Each repository:tag is served at the destination with the source's digest."""
    host = world.registries[destination].host
    for repository, tag in images:
        expected = world.images[(repository, tag)].digest
        assert skopeo.digest_of(f"{host}/{repository}:{tag}") == expected, (destination, tag)


@pytest.fixture
def world(tmp_path: Path, registry_factory: RegistryFactory) -> Iterator[World]:
    """The standard world of these tests; registries stopped afterwards."""
    built = build_world(tmp_path, registry_factory)
    yield built
    for registry in built.registries.values():
        registry.cleanup()


ALL_IMAGES = [(r, t) for r, tags in IMAGES.items() for t in tags]
PROD_IMAGES = [(r, t) for r, t in ALL_IMAGES if r.startswith("prod/")]


class TestBackfill:
    def test_copies_allowed_and_records_denied(self, world: World) -> None:
        """Everything reaches usw2; euw1 gets prod/ only and dev/ is journalled POLICY_DENIED."""
        summary = world.backfill()
        assert summary["exit"] == 0, summary
        assert summary["outcome"] == "COMPLETE"
        assert_replicated(world, USW2, ALL_IMAGES)
        assert_replicated(world, EUW1, PROD_IMAGES)
        assert world.registries[EUW1].repositories() == ["prod/app", "prod/web"]
        denied = [(d["repository"], d["destination"]) for d in summary["denied"]]
        assert denied == [("dev/tool", EUW1)]
        assert "ecr:ReplicateImage" in summary["denied"][0]["reason"]
        assert summary["destinations"][USW2]["complete"] == len(ALL_IMAGES)
        assert summary["destinations"][EUW1]["complete"] == len(PROD_IMAGES)
        states = {(j.repository, j.tag, j.destination): j.state for j in world.jobs()}
        assert states[("dev/tool", "1", EUW1)] is JobState.FAILED
        assert sum(s is JobState.COMPLETE for s in states.values()) == 7

    def test_rerun_makes_only_head_requests_at_destinations(self, world: World) -> None:
        """A second run over a replicated source sends destinations HEADs only: no blob GET,
        no upload, no manifest PUT; it journals nothing new."""
        assert world.backfill()["exit"] == 0
        marks = {name: log_length(r) for name, r in world.registries.items()}
        jobs_before = len(world.jobs())
        again = world.backfill()
        assert again["exit"] == 0, again
        assert again["up_to_date"] == len(ALL_IMAGES) + len(PROD_IMAGES)
        for name in (USW2, EUW1):
            seen = requests_by(world.registries[name], since=marks[name])
            assert seen, name
            assert {method for method, _ in seen} == {"HEAD"}, (name, seen)
            assert all("/manifests/" in path for _, path in seen), seen
        source_methods = {m for m, _ in requests_by(world.source, since=marks[USE1])}
        assert source_methods <= {"GET", "HEAD"}
        assert len(world.jobs()) == jobs_before

    def test_noop_pass_leaves_the_journal_closed(self, world: World, tmp_path: Path) -> None:
        """A pass that finds everything replicated never opens the journal (so it works with the
        journal unreachable), and the next pass with work does open it (and exits 74, the
        journal unusable, when it cannot)."""
        assert world.backfill("--destination", USW2)["exit"] == 0
        gone = tmp_path / "no-such-directory" / "journal.db"
        text = world.config.read_text().replace(world.journal_url, f"sqlite:///{gone}")
        world.config.write_text(text)
        again = world.backfill("--destination", USW2)
        assert again["exit"] == 0, again
        assert again["up_to_date"] == len(ALL_IMAGES)
        world.push("prod/web", "2.0", seed=52)
        result = replicator_cli(world.config, "backfill", "--destination", USW2)
        assert result.returncode == EXIT_JOURNAL_UNUSABLE, result.stderr
        assert "JOURNAL_ERROR" in result.stderr, result.stderr
        assert not gone.parent.exists()

    def test_new_tag_and_moved_tag_are_copied_on_rerun(self, world: World) -> None:
        """After a first run, a new tag and a tag moved at the source are the only new jobs."""
        assert world.backfill()["exit"] == 0
        world.push("prod/web", "2.0", seed=50)
        world.push("prod/app", "v1", seed=51)
        again = world.backfill()
        assert again["exit"] == 0, again
        # Two images x two destinations; the denial is recorded again, not copied.
        assert sum(d["complete"] for d in again["destinations"].values()) == 4
        assert [d["repository"] for d in again["denied"]] == ["dev/tool"]
        assert_replicated(world, USW2, [("prod/web", "2.0"), ("prod/app", "v1")])
        assert_replicated(world, EUW1, [("prod/web", "2.0"), ("prod/app", "v1")])

    def test_filters_by_destination_and_prefix(self, world: World) -> None:
        """--destination and --repository-prefix narrow what is journalled and copied."""
        summary = world.backfill("--destination", USW2, "--repository-prefix", "prod/app")
        assert summary["exit"] == 0, summary
        assert {(j.repository, j.destination) for j in world.jobs()} == {("prod/app", USW2)}
        assert world.registries[EUW1].repositories() == []
        assert world.registries[USW2].repositories() == ["prod/app"]

    def test_dry_run_changes_nothing(self, world: World, tmp_path: Path) -> None:
        """--dry-run prints copies and denials with reasons, and writes no journal and no image."""
        plan = world.backfill("--dry-run")
        assert plan["exit"] == 0, plan
        actions = sorted(
            (p["action"], p["repository"], p["tag"], p["destination"]) for p in plan["plan"]
        )
        expected_copies = [("copy", r, t, USW2) for r, t in ALL_IMAGES] + [
            ("copy", r, t, EUW1) for r, t in PROD_IMAGES
        ]
        assert actions == sorted([*expected_copies, ("denied", "dev/tool", "1", EUW1)])
        assert not (tmp_path / "journal.db").exists()
        for name in (USW2, EUW1):
            assert world.registries[name].repositories() == []
            assert requests_by(world.registries[name])
            assert all(
                method in ("HEAD", "GET") for method, _ in requests_by(world.registries[name])
            )

    def test_table_output_and_exit_code(self, world: World) -> None:
        """Without --json the summary is a table per destination and a verdict line."""
        result = replicator_cli(world.config, "backfill")
        assert result.returncode == 0, result.stderr
        assert "DESTINATION" in result.stdout
        assert "backfill COMPLETE" in result.stdout
        assert f"denied: {USE1}/dev/tool:1@" in result.stdout


class TestInterrupted:
    async def test_interrupted_run_resumes_without_redoing(
        self, tmp_path: Path, registry_factory: RegistryFactory,
        fault_proxy_factory: Any,
    ) -> None:  # fmt: skip
        """Stopped while one image's source read stalls (its two destinations share that
        read), the run hands both jobs back (RETRY_WAIT, INTERRUPTED); the next run finishes
        them and copies nothing the first run completed."""
        world = build_world(tmp_path, registry_factory, grace_period=0.0)
        proxy: FaultProxy = fault_proxy_factory(world.source)
        text = world.config.read_text().replace(world.source.url, proxy.url)
        world.config.write_text(text)
        stalled = world.images[("prod/web", "1.0")]
        proxy.add(Fault.stall(blob_get(stalled.layer_digests[0]), 30.0, times=1))
        config = load_config(world.config)
        stop = asyncio.Event()
        run = asyncio.create_task(run_backfill(config, ScanOptions(), stop=stop))
        reader = JournalReader(world.journal_url)
        for _ in range(600):
            await asyncio.sleep(0.05)
            rows = await asyncio.to_thread(reader.jobs)
            complete = [r for r in rows if r.state is JobState.COMPLETE]
            if len(complete) >= len(ALL_IMAGES) + len(PROD_IMAGES) - 2:
                break
        stop.set()
        first = await run
        assert first.interrupted
        states = sorted((r.repository, r.tag, r.state) for r in first.rows)
        waiting = [(repo, tag) for repo, tag, state in states if state is JobState.RETRY_WAIT]
        assert waiting == [("prod/web", "1.0")] * 2, states
        codes = {r.failure_code for r in first.rows if r.state is JobState.RETRY_WAIT}
        assert codes == {FailureCode.INTERRUPTED}, codes
        assert [s for _, _, s in states].count(JobState.COMPLETE) == 5, states
        marks = {name: log_length(world.registries[name]) for name in (USW2, EUW1)}
        second = await run_backfill(config, ScanOptions())
        assert not second.interrupted
        assert {r.state for r in second.rows} <= {JobState.COMPLETE, JobState.FAILED}
        assert {(r.repository, r.tag) for r in second.rows if r.state is JobState.COMPLETE} <= {
            ("prod/web", "1.0")
        }
        for name in (USW2, EUW1):
            puts = [
                p for m, p in requests_by(world.registries[name], since=marks[name]) if m == "PUT"
            ]
            assert all("/prod/web/" in path for path in puts), puts
        assert_replicated(world, USW2, ALL_IMAGES)
        assert_replicated(world, EUW1, PROD_IMAGES)
        for registry in world.registries.values():
            registry.cleanup()

    def test_killed_run_resumed_at_once(
        self, tmp_path: Path, registry_factory: RegistryFactory, fault_proxy_factory: Any
    ) -> None:
        """Killed with -9 while one image's source read stalls (its jobs IN_PROGRESS), the
        run is followed at once by another, which takes those jobs back and finishes them
        instead of waiting an hour for them to count as orphans."""
        world = build_world(tmp_path, registry_factory)
        proxy: FaultProxy = fault_proxy_factory(world.source)
        world.config.write_text(world.config.read_text().replace(world.source.url, proxy.url))
        stalled = world.images[("prod/web", "1.0")]
        stall = proxy.add(Fault.stall(blob_get(stalled.layer_digests[0]), 60.0, times=1))
        first = subprocess.Popen(
            replicator_command("backfill", "--config", str(world.config)),
            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            # Killed once the stalled read is in flight (its jobs are IN_PROGRESS by then),
            # so the second run reads that blob without the stall.
            held = world.wait_for_jobs(
                lambda rows: (
                    stall.injected >= 1
                    and any(
                        r.repository == "prod/web" and r.state is JobState.IN_PROGRESS for r in rows
                    )
                )
            )
        finally:
            first.kill()
            first.wait()
        assert held, "the first run never held the stalled image's job"
        second = world.backfill()
        assert second["exit"] == 0, second["stderr"]
        assert second["outcome"] == "COMPLETE"
        assert {r.state for r in world.jobs()} == {JobState.COMPLETE, JobState.FAILED}
        assert_replicated(world, USW2, ALL_IMAGES)
        assert_replicated(world, EUW1, PROD_IMAGES)


@dataclass
class DaemonParts:
    """What reconcile reads of the daemon (daemon.reconcile.Reconciled), built for real."""

    config: Config
    sites: Mapping[str, Site]
    journal: Journal | None
    runner: JobRunner | None


class TestReconcile:
    async def test_lost_event_is_repaired_within_an_interval(
        self, tmp_path: Path, registry_factory: RegistryFactory
    ) -> None:
        """With `[reconcile] interval`, an image pushed without any event reaches the
        destinations through the daemon's runner, and passes over a replicated source send
        destinations HEAD requests only."""
        world = build_world(tmp_path, registry_factory, reconcile_interval=1.0)
        config = load_config(world.config)
        sites = sites_of(config)
        stop = asyncio.Event()
        try:
            async with await open_journal(config.journal.url) as journal, ClientPool() as pool:
                copier = Copier()
                runner = JobRunner(
                    journal=journal, copier=copier, pool=pool, settings=lambda: (config, sites)
                )
                parts = DaemonParts(config, sites, journal, runner)
                async with asyncio.TaskGroup() as group:
                    group.create_task(runner.run(stop))
                    group.create_task(reconcile_forever(parts, pool, stop))
                    await wait_until(lambda: replicated(world, USW2, ALL_IMAGES), 30.0)
                    lost = world.push("prod/web", "lost", seed=77)
                    # Both destinations: a copy still landing at one would count as a pass's PUT.
                    await wait_until(
                        lambda: all(
                            replicated(world, name, [("prod/web", "lost")]) for name in (USW2, EUW1)
                        ),
                        10.0,
                    )
                    marks = {n: log_length(world.registries[n]) for n in (USW2, EUW1)}
                    await asyncio.sleep(2.5)
                    stop.set()
            for name in (USW2, EUW1):
                seen = requests_by(world.registries[name], since=marks[name])
                assert seen, name
                assert {method for method, _ in seen} == {"HEAD"}, seen
            assert skopeo.digest_of(f"{world.registries[USW2].host}/prod/web:lost") == lost.digest
        finally:
            stop.set()
            for registry in world.registries.values():
                registry.cleanup()

    async def test_failed_jobs_with_a_temporary_cause_are_retried(
        self, tmp_path: Path, registry_factory: RegistryFactory
    ) -> None:
        """A reconcile pass gives FAILED jobs whose cause may have passed (PROCESS_DIED,
        MAX_ATTEMPTS) a new chance, even one no scan would find (a tag gone from the source),
        and leaves a POLICY_DENIED job FAILED."""
        world = build_world(tmp_path, registry_factory)
        config = load_config(world.config)
        gone = JobKey(USE1, "prod/web", "sha256:" + "e" * 64, "gone", USW2)
        denied = JobKey(USE1, "prod/web", "sha256:" + "d" * 64, "denied", EUW1)
        try:
            async with await open_journal(config.journal.url) as journal, ClientPool() as pool:
                await journal.add_jobs([gone], denied={denied: "no policy"})
                await journal.claim_due(10, datetime.now(UTC) + timedelta(seconds=1))
                await journal.resume_interrupted(max_deaths=1)
                sites = sites_of(config)
                runner = JobRunner(
                    journal=journal, copier=Copier(), pool=pool, settings=lambda: (config, sites)
                )
                await reconcile_once(config, sites, journal, pool=pool, runner=runner)
                rows = {row.key: row for row in await journal.jobs()}
        finally:
            for registry in world.registries.values():
                registry.cleanup()
        assert (rows[gone].state, rows[gone].failure_code) == (JobState.PENDING, None)
        assert rows[denied].state is JobState.FAILED


def replicated(world: World, destination: str, images: list[tuple[str, str]]) -> bool:
    """Whether every repository:tag is at the destination with the source's digest (HEAD)."""
    url = world.registries[destination].url
    for repository, tag in images:
        resp = httpx.head(
            f"{url}/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}
        )
        expected = world.images[(repository, tag)].digest
        if resp.status_code != 200 or resp.headers.get("docker-content-digest") != expected:
            return False
    return True


async def wait_until(check: Callable[[], bool], timeout: float) -> None:
    """Poll `check` (in a thread) until true; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(check):
        assert asyncio.get_running_loop().time() < deadline, f"not true within {timeout}s"
        await asyncio.sleep(0.1)


class TestProgressLine:
    def test_terminal_shows_jobs_bytes_rate_and_eta(self, world: World) -> None:
        """On a terminal backfill redraws its line and ends with every job done."""
        code, drawn = on_terminal(replicator_command("backfill", "--config", str(world.config)))
        assert code == 0, drawn
        last = last_line(drawn)
        assert last.startswith("backfill: ")
        jobs = len(ALL_IMAGES) + len(PROD_IMAGES)
        assert f"{jobs}/{jobs} images" in last, last
        assert "MB/s, ETA 0:00" in last
