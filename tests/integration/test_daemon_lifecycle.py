"""Signals: SIGTERM drains in-flight copies and exits 0; SIGHUP reloads the config, or keeps the
old one when the new one is broken."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from replicator.domain.jobs import JobState
from tests.support import skopeo
from tests.support.daemon import (
    USE1,
    USW2,
    JournalReader,
    Stack,
    manifest_present,
    start_stack,
    topology,
    wait_for,
    write_config,
)
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import LayerSpec, OCILayout
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.ports import free_port
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.stack_fixtures import StackFactory

pytestmark = pytest.mark.integration

KIB = 1024
# A push reaches the destinations in well under a second; 30 s covers a loaded CI machine.
REPLICATED_WITHIN_SECONDS = 30.0
# The destination holds the manifest PUT this long: the copy is surely in flight at SIGTERM.
STALL_SECONDS = 3.0
# Grace long enough for the stalled copy to finish...
LONG_GRACE_SECONDS = 20.0
# ...and one too short for it.
SHORT_GRACE_SECONDS = 0.5
MANIFEST_PUT = requests("PUT", r"/manifests/")


@pytest.fixture(scope="module")
def stack(module_stack_factory: StackFactory) -> Stack:
    """One stack for the SIGHUP tests (they restore the config they change)."""
    return module_stack_factory("hup")


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> OCILayout:
    """Images of this module."""
    return OCILayout(tmp_path_factory.mktemp("hup-layout"))


def push(stack: Stack, layout: OCILayout, repository: str, tag: str, seed: int) -> str:
    """Push a small image as repository:tag to use1 with skopeo; its digest."""
    image = layout.image(tag, [LayerSpec(1, 4 * KIB), LayerSpec(seed, KIB)], label=tag)
    skopeo.push_layout(layout.path, tag, f"{stack.source.host}/{repository}:{tag}")
    return image.digest


def wait_at_usw2(stack: Stack, repository: str, tag: str) -> None:
    """Wait until usw2 serves repository:tag."""
    url = stack.registries[USW2].url
    wait_for(
        lambda: manifest_present(url, repository, tag),
        timeout=REPLICATED_WITHIN_SECONDS,
        what=f"{repository}:{tag} at usw2",
    )


def _not_toml(config: Path) -> None:
    config.write_text(config.read_text() + "\n[workers\nconcurrency = 'lots'\n")


def _unknown_destination(config: Path) -> None:
    rules = config.parent / f"{config.stem}-{USE1}-replication.json"
    document = json.loads(rules.read_text())
    document["rules"][0]["destinations"].append({"region": "ap-south-1", "registryId": "1" * 12})
    rules.write_text(json.dumps(document))


BREAKAGES: dict[str, Callable[[Path], None]] = {
    "not_toml": _not_toml,
    "rule_to_unknown_registry": _unknown_destination,
}


class TestSighup:
    """SIGHUP reloads rules, policies and registries without a restart."""

    @pytest.mark.parametrize("breakage", list(BREAKAGES), ids=list(BREAKAGES))
    def test_broken_config_is_refused_and_the_old_one_kept(
        self, stack: Stack, layout: OCILayout, breakage: str
    ) -> None:
        """A SIGHUP with a broken config logs config_reload_refused (naming the problem), the
        daemon keeps running on the old config and still replicates."""
        documents = [stack.config, *stack.folder.glob("*.json")]
        saved = {path: path.read_text() for path in documents}
        refused_before = len(stack.daemon.events("config_reload_refused"))
        try:
            BREAKAGES[breakage](stack.config)
            stack.daemon.send(signal.SIGHUP)
            wait_for(
                lambda: len(stack.daemon.events("config_reload_refused")) > refused_before,
                timeout=REPLICATED_WITHIN_SECONDS,
                what="config_reload_refused",
            )
        finally:
            for path, text in saved.items():
                path.write_text(text)
        refusal = stack.daemon.events("config_reload_refused")[-1]
        assert str(stack.config) in refusal["error"]
        tag = f"after-{breakage.replace('_', '-')}"
        push(stack, layout, "prod/hup", tag, seed=len(breakage))
        wait_at_usw2(stack, "prod/hup", tag)
        assert stack.daemon.running
        assert not stack.daemon.events("config_reloaded")

    def test_valid_new_config_applies_a_new_rule(self, stack: Stack, layout: OCILayout) -> None:
        """qa/ is not replicated; after a SIGHUP with a rule for qa/ a new qa/ push is, and the
        earlier one stays where it was (rules apply to pushes after they exist, as in ECR)."""
        push(stack, layout, "qa/app", "before", seed=501)
        wait_for(
            lambda: any(
                line.get("repository") == "qa/app" and line.get("jobs") == 0
                for line in stack.daemon.events("event_accepted")
            ),
            timeout=REPLICATED_WITHIN_SECONDS,
            what="the qa/app push accepted with no job",
        )
        urls = {name: registry.url for name, registry in stack.registries.items()}
        write_config(stack.folder, topology(urls, prefixes=("prod", "dev", "qa")), stack.settings)
        stack.daemon.send(signal.SIGHUP)
        stack.daemon.wait_log("config_reloaded")
        push(stack, layout, "qa/app", "after", seed=502)
        wait_at_usw2(stack, "qa/app", "after")
        assert not manifest_present(stack.registries[USW2].url, "qa/app", "before")


def _stack_with_stalled_usw2(
    folder: Path,
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    fault_proxy_factory: Callable[[Registry], FaultProxy],
    grace: float,
) -> tuple[Stack, FaultProxy]:
    proxies: list[FaultProxy] = []

    def behind_proxy(registry: Registry) -> str:
        proxies.append(fault_proxy_factory(registry))
        return proxies[0].url

    stack = start_stack(
        folder,
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        front={USW2: behind_proxy},
        grace_period=grace,
    )
    proxies[0].add(Fault.stall(MANIFEST_PUT, STALL_SECONDS))
    return stack, proxies[0]


def _sigterm_with_a_copy_in_flight(stack: Stack, proxy: FaultProxy, folder: Path) -> None:
    """Push prod/slow:v1, wait until usw2 holds its copy's manifest PUT, then SIGTERM the
    daemon, which exits 0."""
    push(stack, OCILayout(folder), "prod/slow", "v1", seed=7)
    wait_for(lambda: proxy.faults_injected >= 1, timeout=30.0, what="the stalled PUT")
    stack.daemon.send(signal.SIGTERM)
    assert stack.daemon.wait() == 0


class TestSigterm:
    """SIGTERM: stop taking messages, let in-flight copies finish within the grace period."""

    def test_sigterm_lets_the_in_flight_copy_finish_and_exits_0(
        self,
        registry_factory: RegistryFactory,
        mosquitto_factory: MosquittoFactory,
        fault_proxy_factory: Callable[[Registry], FaultProxy],
        tmp_path: Path,
    ) -> None:
        """A copy in flight at SIGTERM (its manifest PUT held by the destination) completes,
        the job is COMPLETE in the journal, and the daemon exits 0."""
        stack, proxy = _stack_with_stalled_usw2(
            tmp_path / "stack", registry_factory, mosquitto_factory, fault_proxy_factory,
            LONG_GRACE_SECONDS,
        )  # fmt: skip
        try:
            _sigterm_with_a_copy_in_flight(stack, proxy, tmp_path / "layout")
        finally:
            stack.stop()
        stopping = stack.daemon.events("daemon_stopping")
        assert stopping
        assert stopping[0]["in_flight"] >= 1
        assert not stack.daemon.events("drain_cancelled_jobs")
        rows = JournalReader(stack.settings.journal_url).jobs()
        usw2 = [row for row in rows if row.destination == USW2]
        assert [row.state for row in usw2] == [JobState.COMPLETE]
        assert manifest_present(stack.registries[USW2].url, "prod/slow", "v1")

    def test_copy_past_the_grace_period_is_left_in_the_journal_and_resumed(
        self,
        registry_factory: RegistryFactory,
        mosquitto_factory: MosquittoFactory,
        fault_proxy_factory: Callable[[Registry], FaultProxy],
        tmp_path: Path,
    ) -> None:
        """A copy still running when the grace period ends is cancelled, the daemon still
        exits 0, and the next start resumes the job to COMPLETE."""
        stack, proxy = _stack_with_stalled_usw2(
            tmp_path / "stack", registry_factory, mosquitto_factory, fault_proxy_factory,
            SHORT_GRACE_SECONDS,
        )  # fmt: skip
        try:
            _sigterm_with_a_copy_in_flight(stack, proxy, tmp_path / "layout")
            assert stack.daemon.events("drain_cancelled_jobs")
            reader = JournalReader(stack.settings.journal_url)
            usw2 = [row for row in reader.jobs() if row.destination == USW2]
            assert [row.state for row in usw2] == [JobState.IN_PROGRESS]
            stack.daemon.start()
            rows = reader.wait_finished(2, timeout=REPLICATED_WITHIN_SECONDS)
            assert {row.state for row in rows} == {JobState.COMPLETE}
        finally:
            stack.stop()
        assert manifest_present(stack.registries[USW2].url, "prod/slow", "v1")


class TestSighupRestartBound:
    def test_a_setting_bound_at_start_is_named_not_applied(self, stack: Stack) -> None:
        """A SIGHUP with a new [http] listen and [mqtt] keepalive warns config_restart_required
        naming both; the API still answers on the old port and config_reloaded says they
        wait for a restart."""
        saved = stack.config.read_text()
        before = len(stack.daemon.events("config_reloaded"))
        try:
            moved = saved.replace(
                f"127.0.0.1:{stack.settings.http_port}", f"127.0.0.1:{free_port()}"
            ).replace("[mqtt]\n", "[mqtt]\nkeepalive = 45\n")
            stack.config.write_text(moved)
            stack.daemon.send(signal.SIGHUP)
            wait_for(
                lambda: len(stack.daemon.events("config_reloaded")) > before,
                timeout=REPLICATED_WITHIN_SECONDS,
                what="config_reloaded",
            )
        finally:
            stack.config.write_text(saved)
        (warning,) = stack.daemon.events("config_restart_required")
        assert set(warning["keys"]) == {"http.listen", "mqtt.keepalive"}
        assert stack.daemon.events("config_reloaded")[-1]["restart_required"] == warning["keys"]
        assert stack.daemon.readyz() == 200
        stack.daemon.send(signal.SIGHUP)  # back to the file it started with: nothing to name
        wait_for(
            lambda: len(stack.daemon.events("config_reloaded")) > before + 1,
            timeout=REPLICATED_WITHIN_SECONDS,
            what="the second config_reloaded",
        )
        assert len(stack.daemon.events("config_restart_required")) == 1
