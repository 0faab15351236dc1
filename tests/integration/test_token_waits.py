"""Bulkheads: a job waiting for a token gives its destination slot back.

One destination (docker-registry) with `per_registry = 1`; a healthy source (docker-registry);
a source behind a fault proxy whose first request for `slow/app` is answered 401 with a Bearer
challenge naming the token issuer of tests/support/token_issuer.py, which holds every token
request (a slow token service). While the slow source's job waits for its token, a push from the
healthy source must be replicated; once the token service answers, the waiting job finishes too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.daemon import (
    DaemonProcess,
    DaemonSettings,
    RegistrySpec,
    envelope,
    manifest_present,
    publish,
    push_images,
    rule,
    wait_for,
    write_config,
)
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import LayerSpec, OCILayout
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.token_issuer import SERVICE, TokenIssuer

pytestmark = pytest.mark.integration

ACCOUNT = "999988887777"
# One slot: the job waiting for its token holds all of the destination unless it gives it back.
PER_REGISTRY = 1
# An event reaches the daemon and its job starts in well under a second; generous under load.
STARTED_WITHIN_SECONDS = 15.0
# An idle push is replicated in about a second here; generous for a loaded machine.
REPLICATED_WITHIN_SECONDS = 15.0


@dataclass
class Setup:
    """The daemon, its broker, both sources, the token issuer and the destination."""

    daemon: DaemonProcess
    broker: Mosquitto
    healthy: Registry
    upstream: Registry
    issuer: TokenIssuer
    dst: Registry
    layout: OCILayout

    def push(self, registry: Registry, name: str, repository: str, tag: str, seed: int) -> None:
        """Push an image to `registry` and announce it on source `name`'s topic."""
        image = self.layout.image(f"{name}-{tag}", [LayerSpec(seed, 4096)], label=name)
        push_images(self.layout.path, registry.url, [(repository, f"{name}-{tag}")])
        publish(
            self.broker.port,
            f"registry/{name}/events",
            envelope(repository, image.digest, tag=f"{name}-{tag}"),
        )


@pytest.fixture
def setup(
    registry_factory: RegistryFactory,
    token_issuer: TokenIssuer,
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> Iterator[Setup]:
    """The daemon replicating `good` and `slowauth` (behind the challenging proxy) to `dst`."""
    healthy, upstream, dst = registry_factory(), registry_factory(), registry_factory()
    proxy = FaultProxy(upstream.url)
    proxy.start()
    proxy.add(
        Fault.challenge(
            requests(path_pattern="^/v2/slow/"),
            f'Bearer realm="{token_issuer.realm}",service="{SERVICE}",'
            f'scope="repository:slow/app:pull"',
            times=1,
        )
    )
    settings = DaemonSettings(
        broker_port=mosquitto.port,
        journal_url=f"sqlite:///{tmp_path / 'journal.db'}",
        client_id=f"replicator-{tmp_path.name}",
        per_registry=PER_REGISTRY,
        grace_period=1.0,
    )
    to_dst = {"rules": [rule([("us-west-2", ACCOUNT)])]}
    specs = [
        RegistrySpec("good", ACCOUNT, "us-east-1", healthy.url, replication=to_dst),
        RegistrySpec("slowauth", ACCOUNT, "eu-west-1", proxy.url, replication=to_dst),
        RegistrySpec("dst", ACCOUNT, "us-west-2", dst.url),
    ]
    config = write_config(tmp_path, specs, settings)
    daemon = DaemonProcess(config, settings.http_port).start()
    try:
        yield Setup(
            daemon, mosquitto, healthy, upstream, token_issuer, dst, OCILayout(tmp_path / "l")
        )
    finally:
        token_issuer.release()
        daemon.stop()
        proxy.stop()
        for registry in (healthy, upstream, dst):
            registry.cleanup()


class TestTokenWaits:
    """A token fetch is a wait: it does not keep the destination's slot."""

    def test_push_proceeds_while_another_job_waits_for_its_token(self, setup: Setup) -> None:
        """With one destination slot and a job waiting on a held token request, a push from
        another source is replicated; the waiting job completes once the token comes."""
        setup.issuer.hold()
        setup.push(setup.upstream, "slowauth", "slow/app", "v1", seed=1)
        wait_for(
            lambda: setup.issuer.held_requests >= 1,
            timeout=STARTED_WITHIN_SECONDS,
            what="the slow source's job asking for its token",
        )
        setup.push(setup.healthy, "good", "good/app", "v1", seed=2)
        started = time.monotonic()
        replicated = False
        while time.monotonic() - started < REPLICATED_WITHIN_SECONDS:
            if manifest_present(setup.dst.url, "good/app", "good-v1"):
                replicated = True
                break
            time.sleep(0.05)
        waited = time.monotonic() - started
        print(f"healthy push beside a job waiting for its token: {waited:.2f} s")
        assert replicated, (
            f"the healthy push was not replicated within {REPLICATED_WITHIN_SECONDS} s while "
            f"the other job waited for its token\n{setup.daemon.log_tail()}"
        )
        assert not manifest_present(setup.dst.url, "slow/app", "slowauth-v1"), "still waiting"
        setup.issuer.release()
        wait_for(
            lambda: manifest_present(setup.dst.url, "slow/app", "slowauth-v1"),
            timeout=REPLICATED_WITHIN_SECONDS,
            what="the job that waited for its token to finish",
        )
