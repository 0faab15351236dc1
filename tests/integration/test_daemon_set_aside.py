"""A job the daemon sets aside at recovery (FAILED PROCESS_DIED) is reported as every FAILED job
is: a result event on the destination's results topic and a count in
`replicator_jobs_finished_total`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
import pytest

from replicator.domain.jobs import FailureCode, JobKey, JobState
from replicator.journal import Journal
from tests.support.daemon import (
    USE1,
    USW2,
    JournalReader,
    Stack,
    metric_value,
    start_stack,
    wait_for,
)
from tests.support.mqtt_fixtures import Mosquitto, MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "d" * 64
KEY = JobKey(USE1, "app", DIGEST, "v1", USW2)
# A claimer of another host: nothing on this one can tell it alive, so a daemon alone on its
# journal takes its IN_PROGRESS job for an orphan of a death.
DEAD_CLAIMER = "gone.example/0:0/4242/0"
# Start-up, recovery and the first CONNACK take a second or two; 30 s covers a loaded machine.
REPORTED_WITHIN_SECONDS = 30.0


class ResultListener:
    """Collects the messages published on the daemon's results topics (paho, own thread)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        assert self._subscribed.wait(REPORTED_WITHIN_SECONDS), "no SUBACK from the broker"

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe("replicator/+/replications", qos=1)

    def _on_message(self, _client: paho.Client, _data: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append({"topic": message.topic, **json.loads(message.payload)})

    def received(self) -> list[dict[str, Any]]:
        """The messages so far."""
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def stack(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Registries, broker and bridge; the daemon configured to set aside a job at its first
    death in flight (max_deaths = 1), not started."""
    started = start_stack(
        tmp_path_factory.mktemp("set-aside"),
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        notifications=False,
        start_daemon=False,
    )
    text = started.config.read_text()
    started.config.write_text(text.replace("[workers]\n", "[workers]\nmax_deaths = 1\n", 1))
    yield started
    started.stop()


async def _orphan(url: str) -> None:
    """A job claimed by a process that died with it in flight."""
    journal = await Journal.open(url, claimer=DEAD_CLAIMER)
    try:
        await journal.add_jobs([KEY])
        [claimed] = await journal.claim_due(1, datetime.now(UTC))
        assert claimed.key == KEY
    finally:
        await journal.close()


def test_job_set_aside_at_start_is_reported_like_any_failed_job(stack: Stack) -> None:
    """A job found in flight at a death, set aside FAILED PROCESS_DIED when the daemon starts,
    publishes a FAILED result with that code on the destination's topic and counts as a
    failed job in replicator_jobs_finished_total."""
    asyncio.run(_orphan(stack.settings.journal_url))
    listener = ResultListener(stack.broker)
    try:
        stack.daemon.start()
        wait_for(lambda: bool(listener.received()), timeout=REPORTED_WITHIN_SECONDS,
                 what="a result event of the job set aside")  # fmt: skip
        [message] = listener.received()
    finally:
        listener.close()
    assert message["topic"] == f"replicator/{USW2}/replications"
    detail = message["detail"]
    assert (detail["result"], detail["failure-code"]) == ("FAILED", FailureCode.PROCESS_DIED)
    assert (detail["repository-name"], detail["image-digest"]) == ("app", DIGEST)
    finished = metric_value(
        stack.daemon.metrics(), "replicator_jobs_finished_total", destination=USW2, result="failed"
    )
    assert finished == 1
    [row] = JournalReader(stack.settings.journal_url).jobs()
    assert (row.state, row.failure_code) == (JobState.FAILED, FailureCode.PROCESS_DIED)
