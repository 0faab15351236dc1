"""MQTT fixtures: real `mosquitto` brokers on free loopback ports.

`mosquitto_factory()` starts a fresh broker (for tests that stop or restart it); `mosquitto` is
one broker shared by the session (tests use distinct client ids and topics on it). Persistence
lives in the broker's own folder, so `restart()` keeps sessions and queued messages.
`mosquitto_factory(tls=True)` serves TLS only, with a certificate for 127.0.0.1 signed by a
throw-away CA whose certificate is `broker.ca_file`.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from tests.support.ports import free_port, wait_listening

MOSQUITTO_BINARY = "/usr/sbin/mosquitto"
OPENSSL_BINARY = "/usr/bin/openssl"
# Queued messages per offline client: bursts of 1,000 pushes must survive a daemon restart.
MAX_QUEUED_MESSAGES = 100_000
# Seconds to wait for mosquitto to exit after SIGTERM (it saves its persistence file first).
STOP_TIMEOUT_SECONDS = 10.0


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) files."""
    ca_key, ca_cert = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    ext = folder / "server.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=replicator-test-ca", "-keyout", ca_key, "-out", ca_cert],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-extfile", ext, "-out", cert],
    ]  # fmt: skip
    for step in steps:
        subprocess.run([OPENSSL_BINARY, *map(str, step)], check=True, capture_output=True)
    return ca_cert, cert, key


class Mosquitto:
    """A mosquitto process with its config, persistence and log in one folder."""

    def __init__(self, folder: Path, *, tls: bool = False) -> None:
        self.folder = folder
        self.port = free_port()
        self.ca_file: Path | None = None
        self._tls_lines: list[str] = []
        if tls:
            self.ca_file, cert, key = make_certificates(folder)
            self._tls_lines = [f"cafile {self.ca_file}", f"certfile {cert}", f"keyfile {key}"]
        self.log_path = folder / "mosquitto.log"
        self.config_path = folder / "mosquitto.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._write_config()
        self.start()

    def _write_config(self) -> None:
        persistence = self.folder / "data"
        persistence.mkdir(exist_ok=True)
        self.config_path.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    *self._tls_lines,
                    "allow_anonymous true",
                    # Run as whoever runs the tests, so the broker can write its folder.
                    f"user {getpass.getuser()}",
                    "persistence true",
                    f"persistence_location {persistence}/",
                    f"max_queued_messages {MAX_QUEUED_MESSAGES}",
                    "max_queued_bytes 0",
                    # Small messages go out at once (Nagle adds up to 40 ms per hop otherwise).
                    "set_tcp_nodelay true",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "connection_messages true",
                    "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                    "",
                ]
            )
        )

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker on its port and wait until it accepts connections."""
        if self.running:
            return
        self._process = subprocess.Popen(
            [MOSQUITTO_BINARY, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(self.port, timeout=10.0)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start:\n{self.log_tail()}") from None

    def stop(self) -> None:
        """Stop the broker gracefully (it writes its persistence file) and wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the broker and delete its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the broker's log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"Mosquitto(127.0.0.1:{self.port}, running={self.running})"


class MosquittoFactory(Protocol):
    """Starts a fresh broker; `tls=True` for a TLS-only listener."""

    def __call__(self, *, tls: bool = False) -> Mosquitto: ...


@pytest.fixture(scope="session")
def mosquitto_factory() -> Iterator[MosquittoFactory]:
    """A factory of fresh brokers, all stopped and deleted at the end of the session."""
    if not Path(MOSQUITTO_BINARY).exists():
        pytest.fail(f"{MOSQUITTO_BINARY} is missing: run scripts/setup.sh (it apt-installs it)")
    started: list[Mosquitto] = []

    def start(*, tls: bool = False) -> Mosquitto:
        broker = Mosquitto(Path(tempfile.mkdtemp(prefix="mosquitto-")), tls=tls)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.cleanup()


@pytest.fixture(scope="session")
def mosquitto(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    """One broker for the whole session; tests that stop it must use the factory instead."""
    return mosquitto_factory()
