"""The daemon's registry credentials change without a restart: a rotated password file is used
after SIGHUP, against a token-auth docker-registry whose issuer changed the password too."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from replicator.domain.jobs import JobState
from tests.support.daemon import DaemonProcess, JournalReader, envelope, publish, push_images
from tests.support.images import LayerSpec, OCILayout
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.one_way import one_way_config, sqlite_settings
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.token_issuer import TokenIssuer

pytestmark = pytest.mark.integration

ACCOUNT = "111122223333"
USER = "replicator"
OLD_PASSWORD, NEW_PASSWORD = "first-pa55word", "rotated-pa55word"
# An event travels broker -> daemon -> copy in well under a second; 30 s covers a loaded CI.
REPLICATED_WITHIN_SECONDS = 30.0


@dataclass
class Setup:
    """A daemon replicating src (anonymous) to dst (token auth, password from a file)."""

    daemon: DaemonProcess
    broker: Mosquitto
    source: Registry
    layout: OCILayout
    password_file: Path
    journal: JournalReader

    def replicate(self, repository: str, count: int) -> JobState:
        """Push one image to `repository` at the source, publish its event, and wait for the
        daemon to finish the job; its state."""
        tag = repository.replace("/", "-")
        image = self.layout.image(tag, [LayerSpec(count, 4096)], label=repository)
        push_images(self.layout.path, self.source.url, [(repository, tag)])
        publish(
            self.broker.port, "registry/src/events", envelope(repository, image.digest, tag=tag)
        )
        rows = self.journal.wait_finished(count, timeout=REPLICATED_WITHIN_SECONDS)
        (row,) = [r for r in rows if r.repository == repository]
        return JobState(row.state)


@pytest.fixture
def setup(
    registry_factory: RegistryFactory,
    token_issuer: TokenIssuer,
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> Iterator[Setup]:
    """The daemon started with OLD_PASSWORD in its password file, the issuer agreeing."""
    token_issuer.users[USER] = OLD_PASSWORD
    source = registry_factory()
    target = registry_factory(token_auth=token_issuer.registry_auth())
    password_file = tmp_path / "dst-password"
    password_file.write_text(OLD_PASSWORD + "\n")
    settings = sqlite_settings(tmp_path, mosquitto.port, max_attempts=1)
    config = one_way_config(
        tmp_path,
        settings,
        source.url,
        target.url,
        account=ACCOUNT,
        destination_extra={"username": USER, "password_file": str(password_file)},
    )
    daemon = DaemonProcess(config, settings.http_port).start()
    try:
        yield Setup(
            daemon,
            mosquitto,
            source,
            OCILayout(tmp_path / "layout"),
            password_file,
            JournalReader(settings.journal_url),
        )
    finally:
        daemon.stop()
        source.cleanup()
        target.cleanup()


class TestPasswordRotation:
    """SIGHUP applies a rotated password file to a registry already in use."""

    def test_rotated_password_file_used_after_sighup(
        self, setup: Setup, token_issuer: TokenIssuer
    ) -> None:
        """After the password changes at the issuer and in the file, SIGHUP makes the next
        job authenticate with the new one; the daemon was not restarted."""
        assert setup.replicate("prod/before", 1) == JobState.COMPLETE
        pid = setup.daemon.pid
        token_issuer.users[USER] = NEW_PASSWORD
        setup.password_file.write_text(NEW_PASSWORD + "\n")
        setup.daemon.send(signal.SIGHUP)
        setup.daemon.wait_log("config_reloaded")
        assert setup.replicate("prod/after", 2) == JobState.COMPLETE, setup.daemon.log_tail()
        assert setup.daemon.pid == pid
        refused = [r for r in token_issuer.requests if r.status == 401]
        assert refused == [], "the old password was never tried after the reload"
        log = setup.daemon.log_path.read_text()
        assert NEW_PASSWORD not in log
        assert OLD_PASSWORD not in log
        assert "eyJ" not in log, "a JWT (base64 of '{\"') was logged"
