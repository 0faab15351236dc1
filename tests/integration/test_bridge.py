"""The webhook bridge between a real docker-registry and a real mosquitto."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from replicator.config.loading import Config, load_config
from replicator.daemon.bridge import Bridge, bridge_bus_options, source_settings
from replicator.daemon.bus import Bus, BusOptions
from replicator.daemon.http_server import HttpServer
from replicator.domain.events import PushEvent
from replicator.domain.events.distribution import DISTRIBUTION_EVENTS_MEDIA_TYPE
from replicator.domain.events.payloads import parse_payload
from tests.support import skopeo
from tests.support.daemon import metric_value
from tests.support.images import LayerSpec, OCILayout
from tests.support.mqtt_fixtures import Mosquitto, MosquittoFactory
from tests.support.ports import free_port, wait_listening
from tests.support.registry_fixtures import RegistryFactory

pytestmark = pytest.mark.integration

TOKEN = "s3cret-bridge-token"
SOURCE = "src1"
# Webhooks and bus hops take milliseconds; distribution retries a refused envelope after its
# configured 1 s backoff, so 20 s covers a retry or two on a loaded machine.
ARRIVAL_SECONDS = 20.0
MARKER_DIGEST = "sha256:" + "0" * 64
_ids = itertools.count()


def manifest_envelope(repository: str) -> bytes:
    """An envelope holding one manifest push (an envelope of blob pushes only is ignored)."""
    event = {
        "id": f"event-{next(_ids)}",
        "action": "push",
        "target": {
            "repository": repository,
            "digest": MARKER_DIGEST,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
        },
    }
    return json.dumps({"events": [event]}).encode()


ENVELOPE = manifest_envelope("team/app")
EVENTS = DISTRIBUTION_EVENTS_MEDIA_TYPE
EVENTS_TYPE = {"content-type": EVENTS}
PATH = f"/events/{SOURCE}"
WEBHOOK_SAMPLES = Path(__file__).resolve().parents[1] / "data" / "webhooks"


def write_config(folder: Path, broker: Mosquitto, *, listen: str = "127.0.0.1:0") -> Config:
    """A config with one source registry, the broker, and the bridge token in a file."""
    (folder / "bridge.token").write_text(TOKEN + "\n")
    client_id = f"bridge-test-{next(_ids)}"
    path = folder / "replicator.toml"
    path.write_text(
        f"""version = 1
[journal]
url = "sqlite:///{folder}/journal.db"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
client_id = "{client_id}"
[bridge]
listen = "{listen}"
token_file = "bridge.token"
[registries.{SOURCE}]
account = "111122223333"
region = "us-east-1"
url = "http://127.0.0.1:1"
"""
    )
    return load_config(path)


@dataclass
class BridgeUnderTest:
    url: str
    broker: Mosquitto
    consumer: Bus

    async def next_message(self) -> bytes:
        """The next envelope on registry/+/events, acknowledged."""
        async with asyncio.timeout(ARRIVAL_SECONDS):
            message = await anext(self.consumer.messages())
        await self.consumer.ack(message)
        assert message.source_name == SOURCE
        return message.payload

    async def assert_nothing_published(self) -> None:
        """Post a marker envelope and check it is the next message: nothing came before it."""
        marker = manifest_envelope(f"marker/m{next(_ids)}")
        headers = {**EVENTS_TYPE, "authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{self.url}{PATH}", content=marker, headers=headers)
        assert response.status_code == 200
        assert await self.next_message() == marker

    async def push_event(self, digest: str) -> PushEvent:
        """Envelopes off the bus until one holds the push of `digest`."""
        async with asyncio.timeout(ARRIVAL_SECONDS):
            while True:
                payload = await self.next_message()
                for event in parse_payload(payload, topic_source=SOURCE, locate=lambda *_: None):
                    if isinstance(event, PushEvent) and event.digest == digest:
                        return event


@pytest.fixture
async def bridge(
    mosquitto_factory: MosquittoFactory, tmp_path: Path
) -> AsyncIterator[BridgeUnderTest]:
    """A bridge in this process on a free port, its own broker, and a consumer of the events."""
    broker = mosquitto_factory()
    config = write_config(tmp_path, broker)
    consumer_options = BusOptions(
        host="127.0.0.1", port=broker.port, client_id=f"{config.mqtt.client_id}-consumer"
    )
    async with (
        Bus(consumer_options) as consumer,
        Bus(bridge_bus_options(config)) as bus,
    ):
        handlers = Bridge(
            bus=bus, sources=source_settings(config), events_topic=config.mqtt.events_topic
        )
        async with HttpServer(handlers.routes(), name="bridge") as server:
            await consumer.wait_connected(within=ARRIVAL_SECONDS)
            await bus.wait_connected(within=ARRIVAL_SECONDS)
            yield BridgeUnderTest(f"http://127.0.0.1:{server.port}", broker, consumer)


def push_image(tmp_path: Path, registry_host: str, repository: str, seed: int) -> str:
    """Push a small one-layer image with skopeo; return its manifest digest."""
    layout = OCILayout(tmp_path / f"layout-{seed}")
    image = layout.image("v1", [LayerSpec(seed=seed, size=2048)])
    skopeo.push_layout(layout.path, "v1", f"{registry_host}/{repository}:v1")
    return image.digest


class TestBridgeHttp:
    async def test_envelope_is_published(self, bridge: BridgeUnderTest) -> None:
        """A valid envelope with the token is answered 200 and is on the bus, byte for byte."""
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{bridge.url}/events/{SOURCE}",
                content=ENVELOPE,
                headers={**EVENTS_TYPE, "authorization": f"Bearer {TOKEN}"},
            )
        assert response.status_code == 200
        assert await bridge.next_message() == ENVELOPE

    @pytest.mark.parametrize(
        "authorization",
        [
            pytest.param(None, id="missing"),
            pytest.param("Bearer wrong-token", id="wrong"),
            pytest.param(f"Basic {TOKEN}", id="wrong-scheme"),
        ],
    )
    async def test_without_token_is_401(
        self, bridge: BridgeUnderTest, authorization: str | None
    ) -> None:
        """Without the right bearer token the bridge answers 401 and publishes nothing."""
        headers = dict(EVENTS_TYPE)
        if authorization is not None:
            headers["authorization"] = authorization
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{bridge.url}/events/{SOURCE}", content=ENVELOPE, headers=headers
            )
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        await bridge.assert_nothing_published()

    @pytest.mark.parametrize(
        ("path", "body", "content_type", "status"),
        [
            pytest.param("/events/nowhere", ENVELOPE, EVENTS, 404, id="unknown-source"),
            pytest.param(f"{PATH}/x", ENVELOPE, EVENTS, 404, id="sub-path"),
            pytest.param(PATH, b"{not json", EVENTS, 400, id="not-json"),
            pytest.param(PATH, b'{"events": {}}', "application/json", 400, id="not-envelope"),
            pytest.param(PATH, ENVELOPE, "text/plain", 415, id="wrong-type"),
            pytest.param(PATH, b"[" * 2_000_000, "application/json", 413, id="too-large"),
        ],
    )
    async def test_bad_requests(
        self, bridge: BridgeUnderTest, path: str, body: bytes, content_type: str, status: int
    ) -> None:
        """Unknown sources, malformed bodies and wrong types get their 4xx, nothing published."""
        headers = {"content-type": content_type, "authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{bridge.url}{path}", content=body, headers=headers)
        assert response.status_code == status
        await bridge.assert_nothing_published()

    async def test_gitlab_rename_is_acknowledged_and_counted(self, bridge: BridgeUnderTest) -> None:
        """GitLab's registry `rename` delivery is answered 200 (its sender would retry a 4xx and
        hold later pushes behind it), counted as ignored, and nothing is published."""
        body = (WEBHOOK_SAMPLES / "distribution-gitlab-rename.json").read_bytes()
        headers = {**EVENTS_TYPE, "authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{bridge.url}{PATH}", content=body, headers=headers)
            metrics = (await http.get(f"{bridge.url}/metrics")).text
        assert response.status_code == 200, response.text
        assert response.json() == {"published": False, "ignored": ["unknown_action"]}
        ignored = metric_value(metrics, "replicator_bridge_requests_total",
                               source=SOURCE, format="distribution", outcome="ignored")  # fmt: skip
        assert ignored == 1
        await bridge.assert_nothing_published()

    async def test_test_deliveries_are_acknowledged(self, bridge: BridgeUnderTest) -> None:
        """Harbor's Test Endpoint (an empty body) and JFrog's Test button (a dummy event) are
        answered 200 and counted as ignored; nothing is published."""
        auth = {"authorization": f"Bearer {TOKEN}"}
        dummy = (WEBHOOK_SAMPLES / "artifactory-test-docker-pushed.json").read_bytes()
        async with httpx.AsyncClient() as http:
            harbor = await http.post(
                f"{bridge.url}{PATH}",
                content=b"",
                headers={"content-type": "application/json", **auth},
            )
            jfrog = await http.post(
                f"{bridge.url}{PATH}",
                content=dummy,
                headers={"content-type": "application/json", **auth},
            )
            metrics = (await http.get(f"{bridge.url}/metrics")).text
        assert (harbor.status_code, harbor.json()["ignored"]) == (200, ["empty_body"])
        assert (jfrog.status_code, jfrog.json()["ignored"]) == (200, ["artifactory_test"])
        for format_name in ("harbor", "artifactory"):
            assert (
                metric_value(
                    metrics,
                    "replicator_bridge_requests_total",
                    source=SOURCE,
                    format=format_name,
                    outcome="ignored",
                )
                == 1
            )
        await bridge.assert_nothing_published()

    async def test_body_naming_another_registry_is_refused(self, bridge: BridgeUnderTest) -> None:
        """A Gitea package hook whose html_url names another host than the source's url is
        answered 400 source_mismatch and counted as rejected; nothing is published."""
        body = (WEBHOOK_SAMPLES / "gitea-push.json").read_bytes()
        headers = {
            "content-type": "application/json",
            "x-gitea-event": "package",
            "authorization": f"Bearer {TOKEN}",
        }
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{bridge.url}{PATH}", content=body, headers=headers)
            metrics = (await http.get(f"{bridge.url}/metrics")).text
        assert response.status_code == 400, response.text
        assert response.text.startswith("source_mismatch: package.html_url")
        assert (
            metric_value(
                metrics,
                "replicator_bridge_requests_total",
                source=SOURCE,
                format="gitea",
                outcome="rejected",
            )
            == 1
        )
        await bridge.assert_nothing_published()

    async def test_503_while_broker_down_then_200(self, bridge: BridgeUnderTest) -> None:
        """With the broker stopped the bridge answers 503; once it is back, 200 again."""
        headers = {**EVENTS_TYPE, "authorization": f"Bearer {TOKEN}"}
        url = f"{bridge.url}/events/{SOURCE}"
        bridge.broker.stop()
        async with httpx.AsyncClient() as http:
            async with asyncio.timeout(ARRIVAL_SECONDS):
                while (
                    response := await http.post(url, content=ENVELOPE, headers=headers)
                ).status_code != 503:
                    await asyncio.sleep(0.05)  # until the bridge notices the broker is gone
            assert response.headers["retry-after"] == "1"
            bridge.broker.start()
            async with asyncio.timeout(ARRIVAL_SECONDS):
                while (
                    response := await http.post(url, content=ENVELOPE, headers=headers)
                ).status_code != 200:
                    await asyncio.sleep(0.1)
        assert await bridge.next_message() == ENVELOPE

    async def test_healthz(self, bridge: BridgeUnderTest) -> None:
        """GET /healthz answers 200 and reports the broker connection."""
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{bridge.url}/healthz")
        assert response.json() == {"status": "ok", "broker_connected": True}


@pytest.mark.slow
class TestBridgeWithRegistry:
    async def test_skopeo_push_becomes_a_bus_event(
        self, bridge: BridgeUnderTest, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        """A push to a registry whose notifications point at the bridge reaches the bus."""
        registry = registry_factory(
            notifications_url=f"{bridge.url}/events/{SOURCE}",
            notification_headers={"Authorization": f"Bearer {TOKEN}"},
        )
        digest = await asyncio.to_thread(push_image, tmp_path, registry.host, "team/app", 1)
        event = await bridge.push_event(digest)
        assert (event.repository, event.tag) == ("team/app", "v1")

    async def test_push_while_broker_down_arrives_after_restart(
        self, bridge: BridgeUnderTest, registry_factory: RegistryFactory, tmp_path: Path
    ) -> None:
        """The registry retries envelopes refused with 503, so a push made during a broker
        outage is on the bus once the broker is back."""
        registry = registry_factory(
            notifications_url=f"{bridge.url}/events/{SOURCE}",
            notification_headers={"Authorization": f"Bearer {TOKEN}"},
        )
        bridge.broker.stop()
        digest = await asyncio.to_thread(push_image, tmp_path, registry.host, "team/outage", 2)
        await asyncio.sleep(1.5)  # the registry meets a 503 and backs off at least once
        bridge.broker.start()
        event = await bridge.push_event(digest)
        assert event.repository == "team/outage"


@pytest.mark.slow
def test_cli_serves_until_sigterm(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`replicator bridge --listen` publishes a posted envelope and exits 0 on SIGTERM."""
    port = free_port()
    config = write_config(tmp_path, mosquitto, listen="127.0.0.1:1")
    process = subprocess.Popen(
        [sys.executable, "-m", "replicator", "bridge", "--config", str(config.path),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )  # fmt: skip
    try:
        wait_listening(port, timeout=ARRIVAL_SECONDS)
        url = f"http://127.0.0.1:{port}/events/{SOURCE}"
        headers = {**EVENTS_TYPE, "authorization": f"Bearer {TOKEN}"}
        with httpx.Client() as http:
            for _ in range(100):  # the bus connects just after the port opens
                response = http.post(url, content=ENVELOPE, headers=headers)
                if response.status_code != 503:
                    break
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=ARRIVAL_SECONDS) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
