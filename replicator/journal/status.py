"""Replication status in the shape of ECR's DescribeImageReplicationStatus (CLI and API)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from replicator.domain.destinations import unreachable_since
from replicator.domain.images.refs import validate_image_query
from replicator.domain.jobs import JobKey, JobState, ReplicationStatus, combined_status
from replicator.journal.models import JobRow
from replicator.journal.store import Journal


class Located(Protocol):
    """What status needs of a registry: where it is."""

    @property
    def account(self) -> str: ...

    @property
    def region(self) -> str: ...


def status_document(
    repository: str,
    rows: Sequence[JobRow],
    registries: Mapping[str, Located],
    *,
    tag: str | None = None,
    unreachable: Mapping[str, datetime] | None = None,
) -> dict[str, Any]:
    """The DescribeImageReplicationStatus answer for the jobs of one image (rows not empty).

    Of the jobs of one image (kind, digest, tag) at one destination, made by several events
    (pushed again after a failure, rolled back to), the newest event's speaks. Jobs of several
    tags of one digest reaching one destination show as one status: FAILED first, then
    IN_PROGRESS (see domain.jobs.combined_status); the failure shown is the newest.
    """
    latest: dict[JobKey, JobRow] = {}
    for row in rows:
        image = row.key.image
        if image not in latest or row.id > latest[image].id:
            latest[image] = row
    by_destination: dict[str, list[JobRow]] = {}
    for row in latest.values():
        by_destination.setdefault(row.destination, []).append(row)
    statuses = []
    for destination, group in sorted(by_destination.items()):
        registry = registries.get(destination)
        status = combined_status(row.state for row in group)
        entry: dict[str, Any] = {
            "region": registry.region if registry else "",
            "registryId": registry.account if registry else "",
            "registryName": destination,
            "status": status.value,
        }
        down = (unreachable or {}).get(destination)
        if status is ReplicationStatus.IN_PROGRESS and down is not None:
            # Why it is not done yet: its jobs wait for the destination to answer again.
            entry["statusReason"] = unreachable_since(
                destination, down.isoformat(timespec="seconds")
            )
        if status is ReplicationStatus.FAILED:
            failed = max((row for row in group if row.state is JobState.FAILED), key=_newest)
            entry["failureCode"] = failed.failure_code
            entry["failureReason"] = failed.failure_reason
        statuses.append(entry)
    image_id: dict[str, str] = {"imageDigest": rows[0].digest}
    tags = {row.tag for row in rows if row.tag}
    if tag is not None or len(tags) == 1:
        image_id["imageTag"] = tag if tag is not None else tags.pop()
    return {"repositoryName": repository, "imageId": image_id, "replicationStatuses": statuses}


def _newest(row: JobRow) -> datetime:
    return row.updated_at


async def replication_status(
    registries: Mapping[str, Located],
    journal: Journal,
    *,
    source: str | None,
    repository: str,
    digest: str | None,
    tag: str | None,
) -> dict[str, Any]:
    """The status document of one image (empty `replicationStatuses` when no job is known)."""
    validate_image_query(repository, digest, tag)
    rows = await journal.status(source, repository, digest=digest, tag=tag)
    if not rows:
        image_id = {k: v for k, v in (("imageDigest", digest), ("imageTag", tag)) if v}
        return {"repositoryName": repository, "imageId": image_id, "replicationStatuses": []}
    down = await journal.unreachable()
    return status_document(repository, rows, registries, tag=tag, unreachable=down)
