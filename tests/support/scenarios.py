"""Building blocks of the reliability scenarios (tests/integration/test_reliability_*.py).

Bursts are made fast: tiny OCI images are built in memory and written straight to the source
registry over one HTTP connection (no layout on disk, no skopeo start-up per image), and their
distribution envelopes are published to the broker in one MQTT session, as the bridge would.
The checks are the scenarios' promises: every image at every destination with its digest, one
job per (image, destination), a sound journal, and no blob in a destination's storage whose
bytes differ from its digest. `record_figures` keeps each run's numbers for RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import paho.mqtt.publish as mqtt_publish

from replicator.domain.images.media import MANIFEST_ACCEPT
from replicator.domain.jobs import JobState
from replicator.journal import JobRow
from tests.support.daemon import USE1, envelope
from tests.support.ports import free_port
from tests.support.registry_server import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
# The source's events topic (`registry/+/events` in the generated configs).
SOURCE_TOPIC = f"registry/{USE1}/events"
# A layer every burst image shares (as real images share a base): 4 KiB, so that a truncated or
# reset blob download is cut mid-body rather than before its first byte.
BASE_LAYER_BYTES = 4 * 1024
# Each image's own layer: small, so a burst of hundreds stays quick on a 2-core machine.
OWN_LAYER_BYTES = 2 * 1024
# Loopback pushes of kilobytes take milliseconds; generous for a loaded machine.
HTTP_TIMEOUT_SECONDS = 30.0
# How often the journal is polled while waiting: often enough for second-scale waits, rarely
# enough to leave the 2 CPUs to the daemon, the registries and the proxies.
JOURNAL_POLL_SECONDS = 0.25
# Environment variable naming a folder where each scenario writes its figures as JSON.
FIGURES_ENV = "RELIABILITY_FIGURES_DIR"


@dataclass(frozen=True)
class TinyImage:
    """An OCI image held in memory: its manifest, blobs, and where it goes."""

    repository: str
    tag: str
    digest: str
    manifest: bytes
    blobs: tuple[tuple[str, bytes], ...]


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def tiny_images(count: int, *, repository: str, prefix: str, seed: int = 0) -> list[TinyImage]:
    """`count` distinct images tagged `<prefix>0`..: a shared base layer, their own layer and
    config (bytes drawn from `seed`, so runs are repeatable)."""
    rng = random.Random(seed)
    base = rng.randbytes(BASE_LAYER_BYTES)
    images = []
    for number in range(count):
        own = rng.randbytes(OWN_LAYER_BYTES)
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {"Labels": {"n": str(number)}}},
            sort_keys=True,
        ).encode()
        layers = [(_digest(base), base), (_digest(own), own)]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": d, "size": len(b)} for d, b in layers
                ],
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        images.append(
            TinyImage(
                repository,
                f"{prefix}{number}",
                _digest(manifest),
                manifest,
                ((_digest(config), config), *layers),
            )
        )
    return images


class SourcePusher:
    """Writes tiny images to a registry over one keep-alive HTTP connection (no notifications
    are involved: the caller publishes the events)."""

    def __init__(self, registry_url: str) -> None:
        self.url = registry_url
        self.client = httpx.Client(timeout=HTTP_TIMEOUT_SECONDS)
        self._uploaded: set[tuple[str, str]] = set()

    def close(self) -> None:
        """Close the HTTP connection."""
        self.client.close()

    def __enter__(self) -> SourcePusher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def push(self, image: TinyImage) -> None:
        """Upload the image's blobs (POST then one PUT: distribution 2.8 has no single-POST
        upload; each blob once per repository) and PUT its manifest by tag."""
        base = f"{self.url}/v2/{image.repository}"
        for digest, data in image.blobs:
            if (image.repository, digest) in self._uploaded:
                continue
            started = self.client.post(f"{base}/blobs/uploads/")
            started.raise_for_status()
            location = httpx.URL(started.url).join(started.headers["location"])
            response = self.client.put(
                location.copy_merge_params({"digest": digest}),
                content=data,
                headers={"content-type": "application/octet-stream"},
            )
            if response.status_code != httpx.codes.CREATED:
                raise RuntimeError(f"blob {digest}: {response.status_code} {response.text[:300]}")
            self._uploaded.add((image.repository, digest))
        response = self.client.put(
            f"{base}/manifests/{image.tag}",
            content=image.manifest,
            headers={"content-type": OCI_MANIFEST},
        )
        if response.status_code != httpx.codes.CREATED:
            raise RuntimeError(f"manifest {image.tag}: {response.status_code} {response.text}")


def publish_pushes(broker_port: int, images: Sequence[TinyImage]) -> None:
    """Publish one distribution envelope per image on the source's topic, QoS 1, in one MQTT
    session (returns after every PUBACK)."""
    if not images:
        return
    mqtt_publish.multiple(
        [
            {
                "topic": SOURCE_TOPIC,
                "payload": envelope(image.repository, image.digest, tag=image.tag),
                "qos": 1,
            }
            for image in images
        ],
        hostname="127.0.0.1",
        port=broker_port,
        client_id=f"reliability-publisher-{os.getpid()}-{free_port()}",
        protocol=paho.MQTTv5,
    )


def push_and_publish(registry_url: str, broker_port: int, images: Sequence[TinyImage]) -> None:
    """Push every image to the source, then publish their events."""
    with SourcePusher(registry_url) as pusher:
        for image in images:
            pusher.push(image)
    publish_pushes(broker_port, images)


def missing_at(registry_url: str, images: Sequence[TinyImage]) -> list[str]:
    """`repository:tag` of the images the registry does not serve with their digest (HEADs
    over one connection: a client per request costs tens of milliseconds of TLS set-up)."""
    missing = []
    with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as client:
        for image in images:
            response = client.head(
                f"{registry_url}/v2/{image.repository}/manifests/{image.tag}",
                headers={"accept": MANIFEST_ACCEPT},
            )
            if response.headers.get("docker-content-digest") != image.digest:
                missing.append(f"{image.repository}:{image.tag}")
    return missing


def assert_one_complete_job_each(
    rows: Sequence[JobRow], images: Sequence[TinyImage], destinations: Sequence[str]
) -> None:
    """Exactly one job per (image, destination), every one COMPLETE."""
    keys = [(row.repository, row.tag, row.digest, row.destination) for row in rows]
    duplicates = {key for key in keys if keys.count(key) > 1}
    assert not duplicates, f"duplicated jobs: {sorted(duplicates)[:10]}"
    wanted = {(i.repository, i.tag, i.digest, d) for i in images for d in destinations}
    assert set(keys) == wanted, f"missing {len(wanted - set(keys))}, extra {set(keys) - wanted}"
    unfinished = [
        f"{r.tag}->{r.destination} {r.state} {r.failure_code}: {r.failure_reason}"
        for r in rows
        if r.state is not JobState.COMPLETE
    ]
    assert not unfinished, f"jobs not COMPLETE: {unfinished[:10]}"


def corrupt_blobs(registry: Registry) -> list[str]:
    """Digests of the blobs in the registry's storage whose bytes do not hash to the digest
    (a partial upload that became visible). Upload sessions in progress are not blobs."""
    base = registry.root / "docker/registry/v2/blobs/sha256"
    bad = []
    for data in base.glob("*/*/data") if base.exists() else ():
        digest = hashlib.sha256()
        with data.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 16), b""):
                digest.update(chunk)
        if digest.hexdigest() != data.parent.name:
            bad.append(f"sha256:{data.parent.name}")
    return bad


def stored_blob_count(registry: Registry) -> int:
    """How many blobs the registry's storage holds."""
    base = registry.root / "docker/registry/v2/blobs/sha256"
    return sum(1 for _ in base.glob("*/*/data")) if base.exists() else 0


def job_states(database: Path) -> dict[str, int]:
    """Jobs per state, read with a plain read-only SQLite query (cheap enough to poll while
    the daemon writes; opening a Journal would take its write lock)."""
    if not database.exists():
        return {}
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30.0)
    try:
        rows = connection.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
    except sqlite3.OperationalError:
        return {}  # the daemon has not created the tables yet
    finally:
        connection.close()
    return {str(state): int(count) for state, count in rows}


def wait_jobs_finished(database: Path, count: int, *, timeout: float) -> dict[str, int]:
    """Wait until at least `count` jobs exist and every one is COMPLETE or FAILED; the counts
    per state. AssertionError with the counts after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    states: dict[str, int] = {}
    finished = {JobState.COMPLETE.value, JobState.FAILED.value}
    while time.monotonic() < deadline:
        states = job_states(database)
        total = sum(states.values())
        if total >= count and all(state in finished for state in states):
            return states
        time.sleep(JOURNAL_POLL_SECONDS)
    raise AssertionError(f"timed out after {timeout}s waiting for {count} finished jobs: {states}")


def integrity_check(database: Path) -> str:
    """`PRAGMA integrity_check` of a SQLite file ("ok" when sound)."""
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    return "; ".join(str(row[0]) for row in rows)


def record_figures(scenario: str, figures: dict[str, Any]) -> None:
    """Print a scenario's figures and, when $RELIABILITY_FIGURES_DIR names a folder, write them
    there as `<scenario>.json` (RELIABILITY.md quotes the last run's)."""
    text = json.dumps(figures, indent=2, sort_keys=True)
    print(f"reliability figures {scenario}: {text}")  # shown with pytest -s or -rP
    folder = os.environ.get(FIGURES_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{scenario}.json").write_text(text + "\n")


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (like "4m") mounted at `mount_point` for the block; needs root.

    Raises PermissionError (the caller skips) when the kernel refuses the mount."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs at {mount_point}: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def fill_file_system(path: Path) -> int:
    """Write zeros to `path` until the file system holding it is full; the bytes written."""
    written = 0
    block = b"\0" * 4096
    with path.open("wb", buffering=0) as file:
        try:
            while True:
                written += file.write(block)
        except OSError:
            pass
        # A last partial write may still fit single bytes.
        with contextlib.suppress(OSError):
            while file.write(b"\0"):
                written += 1
    return written
