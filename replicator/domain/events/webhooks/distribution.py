"""CNCF distribution's notifications (and registries that send its envelope): the body is
already the bus payload, checked with the daemon's own parser and published as sent."""

from __future__ import annotations

from typing import Any

from replicator.domain.events import Ignored, PushEvent, TagPush
from replicator.domain.events.distribution import DISTRIBUTION_EVENTS_MEDIA_TYPES
from replicator.domain.events.payloads import parse_payload
from replicator.domain.events.webhooks.delivery import (
    Delivery,
    Parsed,
    WebhookEvent,
    WebhookFormat,
    content_type,
)


def distribution(_document: Any, delivery: Delivery) -> Parsed:
    """The envelope's manifest events, as the daemon will read them from the bus."""
    parsed = parse_payload(
        delivery.body, topic_source=delivery.source, locate=lambda _a, _r: None, sources=None
    )
    events: list[WebhookEvent] = []
    ignored: list[str] = []
    for event in parsed:
        if isinstance(event, Ignored):
            ignored.append(str(event.reason))
        elif isinstance(event, PushEvent):
            events.append(
                WebhookEvent(
                    "push", event.repository, event.digest, event.tag, event.media_type,
                    event.event_id, agent=event.agent,
                )
            )  # fmt: skip
        elif isinstance(event, TagPush):
            events.append(
                WebhookEvent("push", event.repository, None, event.tag, None, event.event_id)
            )
        else:
            events.append(
                WebhookEvent(
                    "delete", event.repository, event.digest, event.tag, None, event.event_id,
                    agent=event.agent,
                )
            )  # fmt: skip
    return events, ignored


DISTRIBUTION = WebhookFormat(
    "distribution",
    distribution,
    by_headers=lambda headers: content_type(headers) in DISTRIBUTION_EVENTS_MEDIA_TYPES,
    by_shape=lambda document: isinstance(document.get("events"), list),
    verbatim=True,
)
