"""The container image, built by scripts/image.sh with buildah from the Dockerfile (on a base
made from Debian's packages) and run: its version, `config check`, the extras a config may
need, and the daemon replicating a push between the suite's registries, /healthz from outside."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import replicator
from tests.support import skopeo
from tests.support.daemon import USW2, Stack, manifest_present, start_stack, wait_for
from tests.support.images import LayerSpec, OCILayout
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory

# The build alone can take minutes (see BUILD_TIMEOUT_SECONDS): past the suite-wide 300 s.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/replicator:suite"
# scripts/image.sh's own image store, and the driver it chose for it.
STORE = Path(os.environ.get("REPLICATOR_IMAGE_STORE", "/var/lib/replicator-image"))
# The image runs as this uid (Dockerfile USER); its journal folder must be its own.
IMAGE_UID = 10001
# Making the base (mmdebstrap, once per machine) and the build (pip from the lock): a few
# minutes each on a loaded 2-core machine.
BUILD_TIMEOUT_SECONDS = 1200
RUN_TIMEOUT_SECONDS = 60
# Python start-up and the first connections, inside the container, on a loaded machine.
READY_SECONDS = 60.0
REPLICATED_WITHIN_SECONDS = 60.0
KIB = 1024


def _run(*args: str, timeout: float = RUN_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=timeout)


@pytest.fixture(scope="module")
def image() -> str:
    """The image of this checkout, built once for the module."""
    if os.geteuid() != 0:
        pytest.skip("buildah builds the image as root here")
    built = _run(
        str(ROOT / "scripts/image.sh"), "--debian-base", TAG, timeout=BUILD_TIMEOUT_SECONDS
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return TAG


def buildah() -> list[str]:
    """buildah on scripts/image.sh's store."""
    driver = (STORE / "driver").read_text(encoding="utf-8").strip()
    return [
        "buildah", "--root", str(STORE / "storage"), "--runroot", str(STORE / "run"),
        "--storage-driver", driver,
    ]  # fmt: skip


@pytest.fixture
def container(image: str) -> Iterator[str]:
    """A working container of the image (removed afterwards)."""
    made = _run(*buildah(), "from", "-q", image)
    assert made.returncode == 0, made.stderr
    name = made.stdout.strip()
    yield name
    _run(*buildah(), "rm", name)


def _in(container: str, *command: str, volumes: tuple[str, ...] = ()) -> list[str]:
    """The command line running `command` in the container, on the host's network."""
    mounts = [item for volume in volumes for item in ("-v", volume)]
    return [
        *buildah(), "run", "--isolation", "chroot", "--network", "host", *mounts,
        container, "--", *command,
    ]  # fmt: skip


class TestImage:
    def test_version_is_this_checkouts(self, container: str) -> None:
        """`replicator --version` in the image prints this checkout's version, as uid 10001."""
        version = _run(*_in(container, "replicator", "--version"))
        assert version.returncode == 0, version.stderr
        assert replicator.__version__ in version.stdout
        user = _run(*_in(container, "id", "-u"))
        assert user.stdout.strip() == str(IMAGE_UID), (user.returncode, user.stderr)

    def test_extras_a_config_can_need_are_installed(self, container: str) -> None:
        """botocore (auth = "ecr") and psycopg2 (a PostgreSQL journal) import in the image."""
        found = _run(*_in(container, "python", "-c", "import botocore, psycopg2"))
        assert found.returncode == 0, found.stderr

    def test_daemon_replicates_a_push_and_answers_healthz(
        self,
        container: str,
        registry_factory: RegistryFactory,
        mosquitto_factory: MosquittoFactory,
        tmp_path: Path,
    ) -> None:
        """The image's `config check` accepts a config, and its daemon, reached from outside on
        /healthz, replicates a push that the bridge publishes (registries and broker here)."""
        stack: Stack = start_stack(
            tmp_path / "etc",
            mosquitto_factory(),
            lambda url: registry_factory(notifications_url=url),
            start_daemon=False,
            journal_url="sqlite:////var/lib/replicator/journal.db",
        )
        # The config folder as the Dockerfile's header mounts it; the journal on the image's
        # own /var/lib/replicator (the volume), writable by its user.
        volumes = (f"{stack.config.parent}:/etc/replicator:ro",)
        config = f"/etc/replicator/{stack.config.name}"
        try:
            check = _in(container, "replicator", "config", "check", config, volumes=volumes)
            checked = _run(*check)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            log = (tmp_path / "daemon.log").open("w")
            daemon = subprocess.Popen(
                _in(container, "replicator", "run", "--config", config, volumes=volumes),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                healthz = f"http://127.0.0.1:{stack.settings.http_port}/healthz"
                wait_for(lambda: _answers(healthz), timeout=READY_SECONDS, what="/healthz")
                layout = OCILayout(tmp_path / "layout")
                layout.image("v1", [LayerSpec(1, 8 * KIB)], label="image-test")
                skopeo.push_layout(layout.path, "v1", f"{stack.source.host}/prod/app:v1")
                usw2 = stack.registries[USW2].url
                wait_for(
                    lambda: manifest_present(usw2, "prod/app", "v1"),
                    timeout=REPLICATED_WITHIN_SECONDS,
                    what="prod/app:v1 at usw2",
                )
            finally:
                os.killpg(daemon.pid, signal.SIGTERM)
                try:
                    daemon.wait(timeout=RUN_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    os.killpg(daemon.pid, signal.SIGKILL)
                    daemon.wait()
                log.close()
            assert "journal_opened" in (tmp_path / "daemon.log").read_text(encoding="utf-8")
        finally:
            stack.bridge.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == httpx.codes.OK
    except httpx.HTTPError:
        return False


def test_buildah_is_debians() -> None:
    """buildah, which scripts/image.sh installs when missing, is Debian's package here."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah is installed by scripts/image.sh on first use")
    assert _run("dpkg", "-S", shutil.which("buildah") or "").returncode == 0
