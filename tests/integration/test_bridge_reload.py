"""SIGHUP on a real `replicator bridge` process: new sources and token apply at once, a broken
config is refused and the old one kept, [mqtt] and listen changes are reported as restart-only."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from replicator.domain.events.distribution import DISTRIBUTION_EVENTS_MEDIA_TYPE
from tests.support.daemon import BridgeProcess, wait_for
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

OLD_TOKEN = "token-before-reload"
NEW_TOKEN = "token-after-reload"
OLD_SOURCE = "src1"
NEW_SOURCE = "src2"
ENVELOPE = json.dumps({"events": []}).encode()
# A reload reads a few small files: milliseconds; the bus connects within a second of start.
# 20 s covers a loaded 2-core machine.
WITHIN_SECONDS = 20.0
# Each source needs its own account and host; the bridge never contacts the registries.
ACCOUNTS = {OLD_SOURCE: "111122223333", NEW_SOURCE: "444455556666"}
URLS = {OLD_SOURCE: "http://127.0.0.1:1", NEW_SOURCE: "http://127.0.0.1:2"}


@dataclass
class BridgeFiles:
    """The config and token file a bridge process reads, and what they say."""

    folder: Path
    broker_port: int
    port: int

    @property
    def config(self) -> Path:
        """The config file."""
        return self.folder / "replicator.toml"

    def write(
        self,
        sources: tuple[str, ...],
        token: str,
        *,
        keepalive: int = 30,
        port: int | None = None,
    ) -> None:
        """Write the config naming `sources`, and the token file holding `token`."""
        (self.folder / "bridge.token").write_text(token + "\n")
        lines = [
            "version = 1",
            "[mqtt]",
            'host = "127.0.0.1"',
            f"port = {self.broker_port}",
            f'client_id = "reload-{self.port}"',
            f"keepalive = {keepalive}",
            "[bridge]",
            f'listen = "127.0.0.1:{port or self.port}"',
            'token_file = "bridge.token"',
        ]
        for source in sources:
            lines += [
                f"[registries.{source}]",
                f'account = "{ACCOUNTS[source]}"',
                'region = "us-east-1"',
                f'url = "{URLS[source]}"',
            ]
        self.config.write_text("\n".join(lines) + "\n")


@dataclass
class RunningBridge:
    """A started bridge process and the files it reads."""

    process: BridgeProcess
    files: BridgeFiles

    def post(self, source: str, token: str) -> int:
        """POST an empty envelope for `source` with `token`; the status code."""
        response = httpx.post(
            self.process.events_url(source),
            content=ENVELOPE,
            headers={
                "content-type": DISTRIBUTION_EVENTS_MEDIA_TYPE,
                "authorization": f"Bearer {token}",
            },
            timeout=WITHIN_SECONDS,
        )
        return response.status_code

    def wait_published(self, source: str, token: str) -> None:
        """Wait until a POST is answered 200 (the bus connects just after the port opens)."""
        wait_for(
            lambda: self.post(source, token) == 200,
            timeout=WITHIN_SECONDS,
            what=f"200 for {source}",
        )

    def hangup(self, event: str) -> dict[str, object]:
        """SIGHUP the bridge and wait for one more log line `event`; that line."""
        before = len(self.process.events(event))
        self.process.send(signal.SIGHUP)
        wait_for(
            lambda: len(self.process.events(event)) > before,
            timeout=WITHIN_SECONDS,
            what=f"log event {event}",
        )
        return self.process.events(event)[-1]


@pytest.fixture
def bridge(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[RunningBridge]:
    """A `replicator bridge` process serving src1 with OLD_TOKEN on a free port."""
    files = BridgeFiles(tmp_path, mosquitto.port, free_port())
    files.write((OLD_SOURCE,), OLD_TOKEN)
    process = BridgeProcess(files.config, files.port).start()
    try:
        running = RunningBridge(process, files)
        running.wait_published(OLD_SOURCE, OLD_TOKEN)
        yield running
    finally:
        process.stop()


def _invalid_toml(files: BridgeFiles) -> None:
    files.config.write_text("version = 1\n[mqtt\n")


def _bad_account(files: BridgeFiles) -> None:
    files.write((OLD_SOURCE, NEW_SOURCE), NEW_TOKEN)
    text = files.config.read_text()
    files.config.write_text(text.replace(ACCOUNTS[NEW_SOURCE], "12345"))


def _empty_token(files: BridgeFiles) -> None:
    files.write((OLD_SOURCE, NEW_SOURCE), "")


# How each broken config is broken, and the field the refusal names (None: the whole file).
BREAKAGES: dict[str, tuple[Callable[[BridgeFiles], None], str | None]] = {
    "invalid-toml": (_invalid_toml, None),
    "bad-account": (_bad_account, f"registries.{NEW_SOURCE}.account"),
    "empty-token-file": (_empty_token, "bridge.token_file"),
}


class TestBridgeSighup:
    def test_new_source_and_token_apply(self, bridge: RunningBridge) -> None:
        """After the config adds a source and changes the token, SIGHUP makes the new source
        accepted with the new token and the old token refused."""
        assert bridge.post(NEW_SOURCE, OLD_TOKEN) == 404
        bridge.files.write((OLD_SOURCE, NEW_SOURCE), NEW_TOKEN)
        reloaded = bridge.hangup("config_reloaded")
        assert reloaded["sources"] == [OLD_SOURCE, NEW_SOURCE]
        assert bridge.post(NEW_SOURCE, NEW_TOKEN) == 200
        assert bridge.post(OLD_SOURCE, NEW_TOKEN) == 200
        assert bridge.post(OLD_SOURCE, OLD_TOKEN) == 401
        assert not bridge.process.events("config_restart_required")
        assert NEW_TOKEN not in bridge.process.log_path.read_text()

    @pytest.mark.parametrize("breakage", list(BREAKAGES), ids=list(BREAKAGES))
    def test_broken_config_keeps_the_old_one(self, bridge: RunningBridge, breakage: str) -> None:
        """A SIGHUP with a broken config logs config_reload_refused naming file and field, and
        the bridge goes on serving the old sources with the old token."""
        breaks, field = BREAKAGES[breakage]
        breaks(bridge.files)
        refusal = bridge.hangup("config_reload_refused")
        assert refusal["file"] == str(bridge.files.config)
        assert refusal["field"] == field
        assert str(bridge.files.config) in str(refusal["error"])
        assert bridge.process.running
        assert bridge.post(OLD_SOURCE, OLD_TOKEN) == 200
        assert bridge.post(NEW_SOURCE, NEW_TOKEN) == 401
        assert bridge.post(NEW_SOURCE, OLD_TOKEN) == 404
        assert not bridge.process.events("config_reloaded")

    def test_mqtt_and_listen_changes_need_a_restart(self, bridge: RunningBridge) -> None:
        """Changed [mqtt] keys and listen address are logged as needing a restart; the bridge
        stays on its address and the rest of the new config applies."""
        bridge.files.write((OLD_SOURCE, NEW_SOURCE), OLD_TOKEN, keepalive=45, port=free_port())
        warning = bridge.hangup("config_restart_required")
        assert warning["keys"] == ["mqtt.keepalive", "bridge.listen"]
        bridge.process.wait_log("config_reloaded")
        assert bridge.post(NEW_SOURCE, OLD_TOKEN) == 200

    def test_request_in_flight_at_sighup_is_answered(self, bridge: RunningBridge) -> None:
        """A request whose body is still arriving when SIGHUP comes is answered normally."""
        head = (
            f"POST /events/{OLD_SOURCE} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: {DISTRIBUTION_EVENTS_MEDIA_TYPE}\r\n"
            f"authorization: Bearer {OLD_TOKEN}\r\ncontent-length: {len(ENVELOPE)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", bridge.files.port), timeout=10) as client:
            client.sendall(head + ENVELOPE[:5])
            bridge.files.write((OLD_SOURCE, NEW_SOURCE), OLD_TOKEN)
            bridge.hangup("config_reloaded")
            client.sendall(ENVELOPE[5:])
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
