"""Amazon ECR's events in EventBridge's shape: the `ECR Image Action` a source reports (whose
`account` and `region` must name the configured registry of its topic), and the
`ECR Replication Action` the daemon publishes when a job finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from replicator.domain.events import (
    DeleteEvent,
    Ignored,
    IgnoreReason,
    ParsedEvent,
    PushEvent,
    RejectReason,
)
from replicator.domain.events.fields import (
    optional_digest,
    optional_str,
    optional_tag,
    required_str,
    valid_digest,
    valid_repository,
)
from replicator.domain.events.timestamps import parse_timestamp
from replicator.domain.images.media import is_manifest_type
from replicator.domain.routing.policy import repository_arn
from replicator.errors import EventError

ECR_IMAGE_ACTION = "ECR Image Action"
ECR_REPLICATION_ACTION = "ECR Replication Action"
# Outgoing result events keep ECR's `source` so EventBridge-style rules written for ECR match.
ECR_EVENT_SOURCE = "aws.ecr"

# (account, region) -> the name of the configured registry there, or None.
Locate = Callable[[str, str], str | None]


class ReplicationResult(StrEnum):
    """`detail.result` of an outgoing `ECR Replication Action` event."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


def eventbridge_event(document: dict[str, Any], topic_source: str, locate: Locate) -> ParsedEvent:
    """One `ECR Image Action` (or a looped-back `ECR Replication Action`, ignored) that came on
    the topic of `topic_source`; `locate(account, region)` must name that same registry."""
    detail_type = required_str(document, "detail-type", "event")
    event_id = required_str(document, "id", "event")
    if detail_type == ECR_REPLICATION_ACTION:
        # Our own result events (or ECR's) looped back onto the events topic.
        return Ignored(IgnoreReason.REPLICATION_EVENT, event_id)
    if detail_type != ECR_IMAGE_ACTION:
        raise EventError(
            f"EventBridge detail-type {detail_type[:80]!r} is not {ECR_IMAGE_ACTION!r}",
            reason=RejectReason.UNSUPPORTED_EVENT,
        )
    detail = document.get("detail")
    if not isinstance(detail, dict):
        raise EventError("event.detail is missing", reason=RejectReason.MISSING_FIELD)
    action = required_str(detail, "action-type", "detail")
    if action not in ("PUSH", "DELETE"):
        raise EventError(
            f"detail.action-type {action[:40]!r} is not PUSH or DELETE",
            reason=RejectReason.UNSUPPORTED_EVENT,
        )
    if detail.get("result") != "SUCCESS":
        return Ignored(IgnoreReason.NOT_SUCCESSFUL, event_id)
    account = required_str(document, "account", "event")
    region = required_str(document, "region", "event")
    source = locate(account, region)
    if source is None:
        raise EventError(
            f"no configured registry has account {account[:20]!r} and region {region[:40]!r}",
            reason=RejectReason.UNKNOWN_ACCOUNT_REGION,
        )
    if source != topic_source:
        raise EventError(
            f"account {account!r} and region {region!r} name registry {source!r}, but the "
            f"event arrived on the topic of {topic_source!r}: a topic speaks for its own source",
            reason=RejectReason.SOURCE_MISMATCH,
        )
    repository = valid_repository(required_str(detail, "repository-name", "detail"))
    tag = optional_tag(detail, "image-tag", "detail")
    timestamp = parse_timestamp(document.get("time"))
    if action == "DELETE":
        digest = optional_digest(detail, "image-digest", "detail")
        if digest is None and tag is None:
            raise EventError(
                "a DELETE names neither detail.image-digest nor detail.image-tag",
                reason=RejectReason.MISSING_FIELD,
            )
        return DeleteEvent(source, repository, digest, tag, event_id, timestamp)
    digest = valid_digest(required_str(detail, "image-digest", "detail"))
    media_type = optional_str(detail, "manifest-media-type", "detail")
    if media_type is not None and not is_manifest_type(media_type):
        return Ignored(IgnoreReason.UNSUPPORTED_MEDIA_TYPE, event_id)
    return PushEvent(source, repository, digest, tag, media_type, timestamp, event_id)


def replication_result_event(
    *,
    event_id: str,
    time: str,
    repository: str,
    digest: str,
    tag: str | None,
    source_account: str,
    source_region: str,
    destination_account: str,
    destination_region: str,
    result: ReplicationResult,
    failure_code: str | None = None,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    """The `ECR Replication Action` event of a finished job, ready for `json.dumps`.

    As ECR does, the event is emitted by the destination (top-level account and region); the
    caller passes a fresh `event_id` and the RFC 3339 `time`, keeping this function pure.
    """
    detail: dict[str, Any] = {
        "result": result.value,
        "repository-name": repository,
        "image-digest": digest,
        "source-account": source_account,
        "source-region": source_region,
        "destination-account": destination_account,
        "destination-region": destination_region,
        "action-type": "REPLICATE",
    }
    if tag is not None:
        detail["image-tag"] = tag
    if result is ReplicationResult.FAILED:
        detail["failure-code"] = failure_code or "UNKNOWN"
        detail["failure-reason"] = failure_reason or ""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": ECR_REPLICATION_ACTION,
        "source": ECR_EVENT_SOURCE,
        "account": destination_account,
        "time": time,
        "region": destination_region,
        "resources": [repository_arn(destination_region, destination_account, repository)],
        "detail": detail,
    }
