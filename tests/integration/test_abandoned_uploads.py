"""Upload sessions a failed job leaves are ended at the destination, not abandoned there.

A daemon (`max_attempts = 1`) copies an image with a 9 MiB layer (above the shared-read size, so
it goes up in resumable PATCHes) to a docker-registry behind a fault proxy answering every PATCH
503. A temporary failure keeps the session open (recorded in the journal) for the job's next
attempt; here there is none, the job ends FAILED, and every upload session it opened must be
ended: distribution answers a GET of each upload URL 404 BLOB_UPLOAD_UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from replicator.domain.jobs import JobState
from replicator.engine.source_reads import SHARED_BLOB_MAX
from tests.support.daemon import DaemonProcess, JournalReader, envelope, publish, push_images
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import LayerSpec, OCILayout
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.one_way import one_way_config, sqlite_settings
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

ACCOUNT = "999988887777"
# The job's tries (5 within the run, backoff under 4 s each) end well within this under load.
FINISHED_WITHIN_SECONDS = 60.0
UPLOAD_PATH = "/v2/team/big/blobs/uploads/"


@dataclass
class Setup:
    """The daemon, its broker, the source, the destination and the proxy in front of it."""

    daemon: DaemonProcess
    broker: Mosquitto
    src: Registry
    dst: Registry
    proxy: FaultProxy
    journal: JournalReader
    layout: OCILayout


@pytest.fixture
def setup(
    registry_factory: RegistryFactory, mosquitto: Mosquitto, tmp_path: Path
) -> Iterator[Setup]:
    """The daemon replicating `src` to `dst` through a proxy answering every PATCH 503."""
    src, dst = registry_factory(), registry_factory()
    proxy = FaultProxy(dst.url)
    proxy.start()
    proxy.add(Fault.status_code(503, requests(method="PATCH"), times=None))
    settings = sqlite_settings(tmp_path, mosquitto.port, max_attempts=1, grace_period=1.0)
    config = one_way_config(tmp_path, settings, src.url, proxy.url, account=ACCOUNT)
    daemon = DaemonProcess(config, settings.http_port).start()
    try:
        yield Setup(
            daemon,
            mosquitto,
            src,
            dst,
            proxy,
            JournalReader(settings.journal_url),
            OCILayout(tmp_path / "layout"),
        )
    finally:
        daemon.stop()
        proxy.stop()
        for registry in (src, dst):
            registry.cleanup()


class TestAbandonedUploads:
    """A job that fails for good ends the upload sessions it kept open."""

    def test_failed_job_ends_its_kept_upload_session(self, setup: Setup) -> None:
        """After the job fails for good, GET of every upload URL it used is answered 404
        BLOB_UPLOAD_UNKNOWN by distribution (a kept session is DELETEd, not left behind)."""
        image = setup.layout.image("v1", [LayerSpec(7, SHARED_BLOB_MAX + 1024 * 1024)])
        push_images(setup.layout.path, setup.src.url, [("team/big", "v1")])
        publish(
            setup.broker.port, "registry/src/events", envelope("team/big", image.digest, tag="v1")
        )
        (row,) = setup.journal.wait_finished(1, timeout=FINISHED_WITHIN_SECONDS)
        assert JobState(row.state) is JobState.FAILED, row
        # Each session's URL as last PATCHed, with distribution's `_state` (it answers a GET
        # without it BLOB_UPLOAD_INVALID); no PATCH reached it, so the state's offset holds.
        sessions = {
            record.target.split("?", 1)[0]: record.target
            for record in setup.proxy.records
            if record.method == "PATCH" and record.target.startswith(UPLOAD_PATH)
        }
        assert sessions, "the upload went up in PATCHes"
        left = {}
        with httpx.Client() as http:
            for path, target in sorted(sessions.items()):
                answer = http.get(f"{setup.dst.url}{target}")
                if answer.status_code != 404 or "BLOB_UPLOAD_UNKNOWN" not in answer.text:
                    left[path] = f"{answer.status_code} Range: {answer.headers.get('range')}"
        print(f"{len(sessions)} upload session(s) used, still open at the registry: {left}")
        assert not left, f"upload sessions left open at the destination: {left}"
