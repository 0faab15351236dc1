"""A daemon killed mid-upload goes on with the upload after its restart, from the registry's
offset (the upload URL is kept in the journal); a session the registry dropped meanwhile is
started over; a link down longer than a transfer waits is gone on with by a later attempt."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import skopeo
from tests.support.cutting_proxy import CuttingProxy
from tests.support.daemon import (
    USE1,
    USW2,
    Stack,
    envelope,
    manifest_present,
    publish,
    start_stack,
    wait_for,
)
from tests.support.images import BuiltImage, big_blob_layout
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.resuming_uploads import ResumingUploads

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024 * 1024
LAYER_SIZE = 24 * MIB
# usw2's max_bandwidth: the upload takes about 6 s, room to kill the daemon in the middle.
LIMIT = 4 * MIB
# The daemon is killed once the destination holds this share of the layer.
KILL_AT = 0.4
# What the destination may receive in all, against the layer: the bytes before the kill are
# kept, so a little more than the layer (what was in flight at the kill).
RESUMED_FACTOR = 1.25
# How long the link stays down: longer than a transfer waits for it in its slot (its resumes
# give up after about a second and a half) and than the copy's own retries.
DOWN_SECONDS = 6.0
# Start-up, the event's way through the broker and the upload at LIMIT: a loaded machine.
UPLOAD_SECONDS = 60.0


@pytest.fixture
def layer(tmp_path: Path) -> BuiltImage:
    """A one-layer image whose layer is LAYER_SIZE bytes."""
    return big_blob_layout(tmp_path / "layout", "v1", LAYER_SIZE)


@pytest.fixture
def stack_with_front(
    registry_factory: RegistryFactory, mosquitto_factory: MosquittoFactory, tmp_path: Path
) -> Iterator[tuple[Stack, ResumingUploads]]:
    """use1 -> usw2 at LIMIT bytes/s, usw2 behind an upload front that keeps what a broken
    upload delivered (docker-registry itself cannot resume one)."""
    fronts: list[ResumingUploads] = []

    def front(registry: Registry) -> str:
        started = ResumingUploads(registry.url)
        started.start()
        fronts.append(started)
        return started.url

    stack = start_stack(
        tmp_path / "stack",
        mosquitto_factory(),
        lambda _url: registry_factory(),
        notifications=False,
        front={USW2: front},
        extra={USW2: {"max_bandwidth": LIMIT}},
    )
    try:
        yield stack, fronts[0]
    finally:
        stack.stop()
        for started in fronts:
            started.stop()


def _kept_uploads(stack: Stack) -> list[tuple[str, int]]:
    with sqlite3.connect(stack.folder / "journal.db") as connection:
        return list(connection.execute('SELECT destination, "offset" FROM upload_sessions'))


@pytest.mark.parametrize("dropped", [False, True], ids=["kept", "dropped-by-registry"])
def test_kill_9_mid_upload(
    stack_with_front: tuple[Stack, ResumingUploads],
    layer: BuiltImage,
    tmp_path: Path,
    dropped: bool,
) -> None:
    """SIGKILL while the layer is 40% up: the journal keeps the upload, and after the restart
    the daemon goes on from what usw2 holds (at most 1.25x the layer received in all); if
    usw2 dropped the session meanwhile, the upload starts over. Either way usw2 serves the
    image digest-exact."""
    stack, front = stack_with_front
    skopeo.push_layout(tmp_path / "layout", "v1", f"{stack.source.host}/dev/big:v1")
    publish(
        stack.broker.port, f"registry/{USE1}/events", envelope("dev/big", layer.digest, tag="v1")
    )
    wait_for(
        lambda: front.held() >= KILL_AT * LAYER_SIZE, timeout=UPLOAD_SECONDS, what="40% uploaded"
    )
    stack.daemon.kill()
    held_at_kill = front.held()
    assert _kept_uploads(stack) == [(USW2, 0)], "the journal lost the upload under way"
    if dropped:
        front.drop_sessions()
    started = time.monotonic()
    stack.daemon.start()
    usw2 = stack.registries[USW2]
    wait_for(
        lambda: manifest_present(usw2.url, "dev/big", "v1"),
        timeout=UPLOAD_SECONDS,
        what="the image at usw2",
    )
    assert skopeo.digest_of(f"{usw2.host}/dev/big:v1") == layer.digest
    assert _kept_uploads(stack) == [], "a committed upload stayed in the journal"
    event = "blob_upload_restarted" if dropped else "blob_upload_reopened"
    assert stack.daemon.events(event), stack.daemon.log_tail()
    if dropped:
        assert front.bytes_received >= held_at_kill + LAYER_SIZE
    else:
        assert front.bytes_received <= RESUMED_FACTOR * LAYER_SIZE, front.bytes_received
        # What was left, at the limit: the restart did not send the layer again.
        assert time.monotonic() - started < UPLOAD_SECONDS


@pytest.fixture
def stack_behind_a_link(
    registry_factory: RegistryFactory, mosquitto_factory: MosquittoFactory, tmp_path: Path
) -> Iterator[tuple[Stack, ResumingUploads, CuttingProxy]]:
    """As `stack_with_front`, with a link (a proxy that can go down) before usw2's front."""
    started: list[tuple[ResumingUploads, CuttingProxy]] = []

    def front(registry: Registry) -> str:
        uploads = ResumingUploads(registry.url)
        uploads.start()
        link = CuttingProxy(uploads.url, cut_after=None)
        link.start()
        started.append((uploads, link))
        return link.url

    stack = start_stack(
        tmp_path / "stack",
        mosquitto_factory(),
        lambda _url: registry_factory(),
        notifications=False,
        front={USW2: front},
        extra={USW2: {"max_bandwidth": LIMIT}},
    )
    try:
        yield stack, *started[0]
    finally:
        stack.stop()
        for uploads, link in started:
            link.stop()
            uploads.stop()


def test_link_down_longer_than_a_transfer_waits(
    stack_behind_a_link: tuple[Stack, ResumingUploads, CuttingProxy],
    layer: BuiltImage,
    tmp_path: Path,
) -> None:
    """The link to usw2 goes down for DOWN_SECONDS at 40% of the layer, longer than a transfer
    waits for it in its slot: the upload's session is kept open and in the journal, and a later
    attempt goes on from what usw2 holds (at most 1.25x the layer received in all)."""
    stack, front, link = stack_behind_a_link
    skopeo.push_layout(tmp_path / "layout", "v1", f"{stack.source.host}/dev/big:v1")
    push = envelope("dev/big", layer.digest, tag="v1")
    publish(stack.broker.port, f"registry/{USE1}/events", push)
    wait_for(
        lambda: front.held() >= KILL_AT * LAYER_SIZE, timeout=UPLOAD_SECONDS, what="40% uploaded"
    )
    link.go_down()
    time.sleep(DOWN_SECONDS)
    link.come_up()
    usw2 = stack.registries[USW2]
    wait_for(
        lambda: manifest_present(usw2.url, "dev/big", "v1"),
        timeout=UPLOAD_SECONDS,
        what="the image at usw2",
    )
    assert skopeo.digest_of(f"{usw2.host}/dev/big:v1") == layer.digest
    assert stack.daemon.events("blob_upload_reopened"), stack.daemon.log_tail()
    assert front.bytes_received <= RESUMED_FACTOR * LAYER_SIZE, front.bytes_received
    assert _kept_uploads(stack) == []
