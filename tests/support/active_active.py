"""An active-active pair for end-to-end tests: registries A and B, each replicating every
repository to the other (rules A -> B and B -> A, delete replication on both ways), both
notifying the bridge, one broker and one daemon.

`start_pair()` starts it; the `Pair` pushes and deletes at either side, reads both sides and the
daemon's journal, and waits until the daemon is quiet (every job finished, no new one for a
while: the echo of a replica arrives a little after the replica itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from replicator.daemon.fleet import intake_lease
from replicator.domain.jobs import TERMINAL_STATES
from replicator.journal import EventRow, JobRow
from replicator.journal.claimers import claimer_liveness
from tests.support.daemon import (
    BridgeProcess,
    DaemonProcess,
    DaemonSettings,
    JournalReader,
    RegistrySpec,
    manifest_digest,
    metric_value,
    write_config,
)
from tests.support.images import LayerSpec, OCILayout
from tests.support.layout_push import LayoutPusher
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.ports import free_port
from tests.support.registry_server import Registry

A, B = "rega", "regb"
ACCOUNT = "111122223333"
REGIONS = {A: "us-east-1", B: "eu-west-1"}
# The daemon is quiet once no job or event was added for this long: a replica's own event
# reaches the daemon through registry -> bridge -> broker in well under a second even on a
# loaded 2-core machine (the registry's notification queue is immediate).
QUIET_SECONDS = 3.0
QUIET_POLL_SECONDS = 0.25
# Everything of a scenario settles within this on a loaded CI machine.
SETTLE_TIMEOUT_SECONDS = 90.0
HTTP_ACCEPTED = 202
# The shared subscription of a pair's fleet members (start_pair's `members`).
FLEET_GROUP = "pair-fleet"


def pair_rules(other: str, *, deletes: bool) -> dict[str, object]:
    """Every repository to `other` (same account, its region), delete replication as given."""
    return {
        "rules": [
            {
                "destinations": [{"region": REGIONS[other], "registryId": ACCOUNT}],
                "deleteReplication": {"enabled": deletes},
            }
        ]
    }


@dataclass
class Pair:
    """A <-> B with their bridge and daemon."""

    folder: Path
    registries: dict[str, Registry]
    config: Path
    bridge: BridgeProcess
    daemon: DaemonProcess
    journal: JournalReader
    layout: OCILayout
    # More daemons of one fleet beside `daemon` (same journal and config, own client id and
    # API port, one shared subscription): empty for one daemon.
    fleet: list[DaemonProcess] = field(default_factory=list)
    _seeds: list[int] = field(default_factory=lambda: [1000])
    _images: dict[str, str] = field(default_factory=dict)  # digest -> its name in `layout`

    @property
    def members(self) -> list[DaemonProcess]:
        """Every daemon: `daemon` first, then the other fleet members."""
        return [self.daemon, *self.fleet]

    def url(self, name: str) -> str:
        """The registry's base URL."""
        return self.registries[name].url

    def push(self, name: str, repository: str, tag: str) -> str:
        """Push a new, distinct image to `name`'s `repository:tag` (as a user would: blobs, then
        the manifest by tag); its digest."""
        self._seeds[0] += 1
        seed = self._seeds[0]
        built = self.layout.image(f"img-{seed}", [LayerSpec(seed, 2048)], label=f"l{seed}")
        self._images[built.digest] = f"img-{seed}"
        self.push_again(name, repository, tag, built.digest)
        return built.digest

    def push_again(self, name: str, repository: str, tag: str, digest: str) -> None:
        """Push an image `push` made before (same digest) to `name`'s `repository:tag`: a user
        restoring what they deleted."""
        pusher = LayoutPusher(self.layout.path, self.url(name), repository)
        try:
            pusher.push_tag(self._images[digest], as_tag=tag)
        finally:
            pusher.close()

    def delete(self, name: str, repository: str, digest: str) -> None:
        """Delete a manifest at `name` by digest, as a user would."""
        response = self.try_delete(name, repository, digest)
        assert response.status_code == HTTP_ACCEPTED, (
            f"DELETE {response.request.url}: {response.status_code} {response.text}"
        )

    def try_delete(self, name: str, repository: str, digest: str) -> httpx.Response:
        """Ask `name` to delete a manifest by digest; its answer, whatever it is."""
        url = f"{self.url(name)}/v2/{repository}/manifests/{digest}"
        return httpx.delete(url, timeout=10.0)

    def digest(self, name: str, repository: str, reference: str) -> str | None:
        """What `name` serves for `repository:reference` (None: nothing)."""
        return manifest_digest(self.url(name), repository, reference)

    def intake_taken(self) -> bool:
        """Whether a live member holds the fleet's intake lease (always, for one daemon): a
        push's event queued at the broker for a dead member's session is not journalled until
        one does, so the journal alone does not show a fleet quiet."""
        if not self.fleet:
            return True
        lease = self.journal.lease(intake_lease(FLEET_GROUP))
        return (
            lease is not None
            and lease.expires > time.time()
            and lease.holder in claimer_liveness([lease.holder]).alive
        )

    def deliveries(self) -> float | None:
        """The webhook deliveries the bridge has answered so far (any outcome: a 503 while it
        has no broker is a registry's event still to come), or None while the bridge or a
        running daemon is not connected to the broker: events may then still be on their way,
        however quiet the journal looks (a registry retries a refused delivery, and after two
        broker restarts in a row a connection took up to 10 s to come back: active-active seed
        3061's delete reached the daemon after the checker had judged)."""
        try:
            bridge = httpx.get(f"{self.bridge.url}/metrics", timeout=10.0).text
            members = [m.metrics() for m in self.members if m.running]
        except httpx.HTTPError:
            return None
        connected = metric_value(bridge, "replicator_bridge_broker_connected") == 1.0 and all(
            metric_value(text, "replicator_broker_connected") == 1.0 for text in members
        )
        return metric_value(bridge, "replicator_bridge_requests_total") if connected else None

    def wait_quiet(self, *, timeout: float = SETTLE_TIMEOUT_SECONDS) -> list[JobRow]:
        """Wait until every job is finished and no job, event or webhook delivery was added for
        QUIET_SECONDS, the bridge and the daemons connected to the broker and a live member
        holding a fleet's intake all along; the jobs."""
        seen: tuple[int, int, float | None] = (-1, -1, None)
        since = deadline = time.monotonic()
        deadline += timeout
        while time.monotonic() < deadline:
            jobs = self.journal.jobs()
            now = (len(jobs), len(self.journal.events()), self.deliveries())
            unsettled = any(j.state not in TERMINAL_STATES for j in jobs) or now[2] is None
            if now != seen or unsettled or not self.intake_taken():
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= QUIET_SECONDS:
                return jobs
            # Each look opens the journal: a few a second is plenty next to QUIET_SECONDS.
            time.sleep(QUIET_POLL_SECONDS)
        raise AssertionError(f"the daemon was not quiet after {timeout}s: {seen} jobs, events")

    def events(self) -> list[EventRow]:
        """Every event the daemon recorded."""
        return self.journal.events()

    def stop(self) -> None:
        """Stop the daemons and the bridge."""
        for member in self.members:
            member.stop()
        self.bridge.stop()


def start_pair(
    folder: Path,
    broker: Mosquitto,
    start_registry: Callable[[str | None], Registry],
    *,
    deletes: bool = True,
    reconcile_interval: float = 0.0,
    one_way: bool = False,
    members: int = 1,
    journal_url: str | None = None,
) -> Pair:
    """Start A and B (each notifying the bridge under its own name), the bridge and the daemon;
    `reconcile_interval` > 0 turns reconcile on (every so many seconds); `one_way` leaves B
    without rules (A -> B only); `members` > 1 starts that many daemons of one fleet (one
    journal, one shared subscription); the journal is `journal_url` (an empty database), a
    SQLite file in `folder` by default."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = DaemonSettings(
        broker_port=broker.port,
        journal_url=journal_url or f"sqlite:///{folder / 'journal.db'}",
        client_id=f"replicator-{folder.name}",
        shared_group=FLEET_GROUP if members > 1 else "",
    )
    bridge_base = f"http://127.0.0.1:{settings.bridge_port}/events"
    registries = {name: start_registry(f"{bridge_base}/{name}") for name in (A, B)}
    other = {A: B, B: A}
    specs = [
        RegistrySpec(
            name, ACCOUNT, REGIONS[name], registries[name].url,
            replication=None if one_way and name == B else pair_rules(other[name], deletes=deletes),
        )
        for name in (A, B)
    ]  # fmt: skip
    configs = []
    for number in range(members):
        member = settings if number == 0 else replace(
            settings, client_id=f"{settings.client_id}-{number + 1}", http_port=free_port()
        )  # fmt: skip
        where = folder if number == 0 else folder / f"member-{number + 1}"
        config = write_config(where, specs, member)
        if reconcile_interval > 0:
            with config.open("a") as file:
                file.write(f"[reconcile]\ninterval = {reconcile_interval}\n")
        configs.append((config, member.http_port))
    bridge = BridgeProcess(configs[0][0], settings.bridge_port).start()
    daemons = [DaemonProcess(config, port).start() for config, port in configs]
    layout = OCILayout(folder / "layout")
    return Pair(
        folder, registries, configs[0][0], bridge, daemons[0],
        JournalReader(settings.journal_url), layout, daemons[1:],
    )  # fmt: skip
