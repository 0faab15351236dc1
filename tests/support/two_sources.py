"""The bulkhead tests' set-up: a daemon replicating two sources to one destination, one source
reached through a fault proxy (held requests, a token challenge...) so that its jobs are held
up, the other direct. What the tests check is that the held-up source does not hold up the other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.daemon import (
    DaemonProcess,
    RegistrySpec,
    envelope,
    manifest_present,
    publish,
    push_images,
    rule,
    write_config,
)
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.images import LayerSpec, OCILayout
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.one_way import ACCOUNT, DESTINATION, DESTINATION_REGION, sqlite_settings
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

# Layer seeds of the two sources' images, far apart: an image of one never shares a blob with
# the other's (a shared blob would be mounted, or wait for the other's transfer in flight).
HELD_SEEDS, DIRECT_SEEDS = 1000, 2000
# A test's daemon stops quickly: nothing it holds at the end is waited for.
GRACE_PERIOD_SECONDS = 1.0


@dataclass
class TwoSources:
    """The daemon, its broker, the held-up source (`upstream` behind `proxy`), the direct one
    and the destination."""

    daemon: DaemonProcess
    broker: Mosquitto
    held: str
    upstream: Registry
    proxy: FaultProxy
    direct: str
    registry: Registry
    dst: Registry
    layout: OCILayout
    pushes: dict[str, int] = field(default_factory=dict)

    def push(self, source: str, repository: str, tag: str) -> str:
        """Push a new small image to `source` (its registry) as repository:tag and announce it
        on the source's topic; its digest. `tag` names it in the test's layout too, so it is
        unique across both sources."""
        count = self.pushes[source] = self.pushes.get(source, 0) + 1
        seed = (HELD_SEEDS if source == self.held else DIRECT_SEEDS) + count
        image = self.layout.image(tag, [LayerSpec(seed, 4096)], label=tag)
        registry = self.upstream if source == self.held else self.registry
        push_images(self.layout.path, registry.url, [(repository, tag)])
        publish(
            self.broker.port,
            f"registry/{source}/events",
            envelope(repository, image.digest, tag=tag),
        )
        return image.digest

    def replicated_within(self, repository: str, tag: str, give_up: float) -> float:
        """Seconds until repository:tag is at the destination (`give_up` if not by then)."""
        started = time.monotonic()
        while time.monotonic() - started < give_up:
            if manifest_present(self.dst.url, repository, tag):
                return time.monotonic() - started
            time.sleep(0.05)
        return give_up


@contextmanager
def two_sources(
    registry_factory: RegistryFactory,
    broker: Mosquitto,
    folder: Path,
    *,
    held: str,
    direct: str,
    faults: Sequence[Fault],
    per_registry: int,
) -> Iterator[TwoSources]:
    """The daemon (started) replicating `held` (behind a proxy injecting `faults`) and `direct`
    to `dst` with `per_registry` slots a registry; all stopped and deleted afterwards."""
    upstream, registry, dst = registry_factory(), registry_factory(), registry_factory()
    proxy = FaultProxy(upstream.url).start()
    for fault in faults:
        proxy.add(fault)
    settings = sqlite_settings(
        folder, broker.port, per_registry=per_registry, grace_period=GRACE_PERIOD_SECONDS
    )
    to_dst = {"rules": [rule([(DESTINATION_REGION, ACCOUNT)])]}
    specs = [
        RegistrySpec(held, ACCOUNT, "us-east-1", proxy.url, replication=to_dst),
        RegistrySpec(direct, ACCOUNT, "eu-west-1", registry.url, replication=to_dst),
        RegistrySpec(DESTINATION, ACCOUNT, DESTINATION_REGION, dst.url),
    ]
    daemon = DaemonProcess(write_config(folder, specs, settings), settings.http_port).start()
    try:
        yield TwoSources(
            daemon, broker, held, upstream, proxy, direct, registry, dst, OCILayout(folder / "l")
        )
    finally:
        daemon.stop()
        proxy.stop()
        for server in (upstream, registry, dst):
            server.cleanup()
