"""Bus payloads (ARCHITECTURE §5) -> PushEvent / TagPush / DeleteEvent / Ignored, or EventError.

Two shapes are accepted:

1. the CNCF distribution notification envelope `{"events": [...]}` that registry webhooks send
   (the source registry is the name in the topic `registry/<source-name>/events`);
2. an Amazon EventBridge `ECR Image Action` event, whose `account` and `region` must name the
   configured registry of its topic.

A message's source is its topic, whatever its shape: a publisher the broker lets onto one
source's topic cannot speak for another registry by naming it in the body.

An envelope is all-or-nothing: one invalid event rejects the whole message. Distribution has
already validated names and digests before it notifies, so a bad event means a hand-made or
corrupted message, and rejecting it whole keeps "one message, one journal outcome".
"""

from __future__ import annotations

import json
from collections.abc import Collection

from replicator.domain.events import ParsedEvent, RejectReason
from replicator.domain.events.distribution import distribution_event
from replicator.domain.events.ecr import Locate, eventbridge_event
from replicator.errors import EventError

# Distribution envelopes are a few KiB (a tagged 4-layer manifest push is ~2 KiB, one event per
# envelope by default); 1 MiB leaves room for batched envelopes and big indexes while bounding
# the memory and parse time one message can take.
MAX_PAYLOAD_BYTES = 1024 * 1024


def parse_payload(
    payload: bytes,
    *,
    topic_source: str | None,
    locate: Locate,
    sources: Collection[str] | None = None,
) -> list[ParsedEvent]:
    """Parse one bus message into events; raise EventError with a `RejectReason` when rejected.

    `topic_source` is the source-name position of the topic the message came on, and the
    message's source; `sources`, when given, are the configured registry names it must be one
    of. `locate(account, region)` names the configured registry of an EventBridge event, or
    None; it must be the topic's.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise EventError(
            f"payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}",
            reason=RejectReason.TOO_LARGE,
        )
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and over-long integers;
        # RecursionError is what deeply nested arrays raise.
        raise EventError(
            f"payload is not JSON: {str(exc)[:200]}", reason=RejectReason.INVALID_JSON
        ) from exc
    if not isinstance(document, dict):
        raise EventError(
            f"payload is a JSON {type(document).__name__}, not an object",
            reason=RejectReason.UNSUPPORTED_EVENT,
        )
    if "events" in document:
        source = _topic_source(topic_source, sources)
        events = document["events"]
        if not isinstance(events, list):
            raise EventError(
                "'events' of the envelope is not a list", reason=RejectReason.UNSUPPORTED_EVENT
            )
        return [distribution_event(event, source, index) for index, event in enumerate(events)]
    if "detail-type" in document:
        return [eventbridge_event(document, _topic_source(topic_source, sources), locate)]
    raise EventError(
        "payload is neither a distribution envelope ('events') nor an EventBridge event "
        "('detail-type')",
        reason=RejectReason.UNSUPPORTED_EVENT,
    )


def _topic_source(topic_source: str | None, sources: Collection[str] | None) -> str:
    if not topic_source:
        raise EventError(
            "an event must arrive on registry/<source-name>/events",
            reason=RejectReason.UNKNOWN_SOURCE,
        )
    if sources is not None and topic_source not in sources:
        raise EventError(
            f"source {topic_source[:80]!r} is not a configured registry",
            reason=RejectReason.UNKNOWN_SOURCE,
        )
    return topic_source
