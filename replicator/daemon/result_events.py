"""Publishing a finished job's `ECR Replication Action` event on the destination's topic."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from replicator.config.loading import Config
from replicator.daemon.bus import Bus
from replicator.domain.events.ecr import ReplicationResult, replication_result_event
from replicator.domain.jobs import JobKey, JobState
from replicator.engine.job_queue import JobEnd
from replicator.errors import BusError
from replicator.logs import get_logger

log = get_logger(__name__)


async def publish_result(
    bus: Bus,
    config: Config,
    key: JobKey,
    *,
    succeeded: bool,
    code: str | None = None,
    reason: str | None = None,
) -> None:
    """Publish the result; a broker outage is logged, never fails the (journalled) job."""
    source = config.registries.get(key.source)
    target = config.registries.get(key.destination)
    if source is None or target is None:
        return
    event = replication_result_event(
        event_id=str(uuid.uuid4()),
        time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        repository=key.repository,
        digest=key.digest,
        tag=key.tag,
        source_account=source.account,
        source_region=source.region,
        destination_account=target.account,
        destination_region=target.region,
        result=ReplicationResult.SUCCESS if succeeded else ReplicationResult.FAILED,
        failure_code=code,
        failure_reason=reason,
    )
    topic = config.mqtt.results_topic.format(registry=key.destination)
    try:
        await bus.publish(topic, json.dumps(event).encode())
    except BusError as exc:
        log.warning("result_not_published", topic=topic, error=str(exc))


class ResultPublisher:
    """Publishes the result of every job that reached COMPLETE or FAILED (a job observer).

    A SUPERSEDED job publishes none: the source moved on since its event, and the newer
    event's job reports the image the tag names now.
    """

    def __init__(self, bus: Bus, config: Callable[[], Config]) -> None:
        self._bus = bus
        self._config = config

    async def job_ended(self, end: JobEnd) -> None:
        """Publish a final outcome; an attempt that waits to retry is not a result yet."""
        if end.state in (JobState.RETRY_WAIT, JobState.SUPERSEDED):
            return
        await publish_result(
            self._bus,
            self._config(),
            end.key,
            succeeded=end.state is JobState.COMPLETE,
            code=end.code,
            reason=end.reason,
        )
