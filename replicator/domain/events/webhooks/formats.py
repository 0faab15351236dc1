"""The formats of registries that are their own projects or cloud services: ECR, Harbor, Quay,
ACR, zot, Artifactory and GAR (replicator.domain.events.webhooks has the whole picture).

Each parser returns the kept events (manifest pushes and deletes) and the reasons of the ignored
rest, or raises EventError. Names, tags and digests are checked with the OCI grammars, so `..`, `/`
tricks and oversized values never reach the bus. Registry quirks are noted where they decide
a field (tests/data/webhooks/README.md has the sources).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from replicator.domain.events import IgnoreReason, RejectReason
from replicator.domain.events.ecr import ECR_IMAGE_ACTION, ECR_REPLICATION_ACTION
from replicator.domain.events.fields import optional_str, required_str, valid_repository
from replicator.domain.events.timestamps import format_timestamp
from replicator.domain.events.webhooks import fields
from replicator.domain.events.webhooks.delivery import (
    Action,
    Delivery,
    Parsed,
    WebhookEvent,
    WebhookFormat,
)
from replicator.domain.images.media import is_manifest_type
from replicator.domain.images.refs import is_digest
from replicator.errors import EventError

GAR_ACTIONS = frozenset({"INSERT", "DELETE"})
# JFrog's Test button posts a dummy event of the webhook's first type, its values "sample_*"
# (repo_key sample_repo, image sample_arch, tag sample_image): nothing to copy.
ARTIFACTORY_TEST_CHECKSUM = "sample_checksum"


def ecr(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """Amazon EventBridge `ECR Image Action` (through an API destination), which must name the
    source's configured (account, region)."""
    detail_type = required_str(document, "detail-type", "event")
    event_id = required_str(document, "id", "event")
    if detail_type == ECR_REPLICATION_ACTION:
        return [], [IgnoreReason.REPLICATION_EVENT.value]
    if detail_type != ECR_IMAGE_ACTION:
        return [], [f"ecr_{fields.word(detail_type)}"]
    detail = fields.mapping(document, "detail", "event")
    action = required_str(detail, "action-type", "detail")
    if action not in ("PUSH", "DELETE"):
        return [], [f"ecr_{fields.word(action)}"]
    if detail.get("result") != "SUCCESS":
        return [], [IgnoreReason.NOT_SUCCESSFUL.value]
    account, region = (
        required_str(document, "account", "event"),
        required_str(document, "region", "event"),
    )
    if (account, region) != delivery.location:
        raise EventError(
            f"the event is of account {account[:20]!r} region {region[:40]!r}, not of this "
            "source's account and region",
            reason=RejectReason.UNKNOWN_ACCOUNT_REGION,
        )
    repository = valid_repository(required_str(detail, "repository-name", "detail"))
    tag = fields.tag(optional_str(detail, "image-tag", "detail"))
    digest = fields.digest(optional_str(detail, "image-digest", "detail"))
    time = optional_str(document, "time", "event")
    if action == "DELETE":
        if digest is None and tag is None:
            raise EventError(
                "a DELETE names neither detail.image-digest nor detail.image-tag",
                reason=RejectReason.MISSING_FIELD,
            )
        return [WebhookEvent("delete", repository, digest, tag, None, event_id, time)], []
    if digest is None:
        raise EventError("a PUSH has no detail.image-digest", reason=RejectReason.MISSING_FIELD)
    media_type = optional_str(detail, "manifest-media-type", "detail")
    if media_type is not None and not is_manifest_type(media_type):
        return [], [IgnoreReason.UNSUPPORTED_MEDIA_TYPE.value]
    return [WebhookEvent("push", repository, digest, tag, media_type, event_id, time)], []


# Harbor 2.x's artifact events, and Harbor 1.x's names of the same (same body otherwise).
_HARBOR_ACTIONS = {
    "PUSH_ARTIFACT": "push", "DELETE_ARTIFACT": "delete",
    "pushImage": "push", "deleteImage": "delete",
}  # fmt: skip


def harbor(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """Harbor's default format: `type` PUSH_ARTIFACT / DELETE_ARTIFACT (1.x: pushImage /
    deleteImage), `event_data`."""
    kind = required_str(document, "type", "body")
    action = _HARBOR_ACTIONS.get(kind)
    if action is None:
        return [], [f"harbor_{fields.word(kind)}"]
    occurred = document.get("occur_at")
    # `occur_at` is Unix seconds (bool is an int to Python, never a time).
    plain_int = isinstance(occurred, int) and not isinstance(occurred, bool)
    when = format_timestamp(occurred) if plain_int and occurred is not None else None
    data = fields.mapping(document, "event_data", "body")
    return _harbor_resources(
        data, "push" if action == "push" else "delete", delivery.fallback_id, when
    )


def harbor_cloudevents(document: dict[str, Any], _delivery: Delivery) -> Parsed:
    """Harbor's CloudEvents format (structured mode): `type` harbor.artifact.pushed/deleted."""
    kind = required_str(document, "type", "body")
    event_id = required_str(document, "id", "body")
    action = {"harbor.artifact.pushed": "push", "harbor.artifact.deleted": "delete"}.get(kind)
    if action is None:
        return [], [fields.word(kind)]
    data = fields.mapping(document, "data", "body")
    when = optional_str(document, "time", "body")
    return _harbor_resources(data, "push" if action == "push" else "delete", event_id, when)


def _harbor_resources(
    data: dict[str, Any], action: Action, event_id: str, when: str | None
) -> Parsed:
    repository = valid_repository(
        required_str(fields.mapping(data, "repository", "data"), "repo_full_name", "data")
    )
    resources = fields.entries(data, "resources", "data")
    events = []
    for index, resource in enumerate(resources):
        where = f"data.resources[{index}]"
        if not isinstance(resource, dict):
            raise EventError(f"{where} is not an object", reason=RejectReason.UNSUPPORTED_EVENT)
        digest = fields.digest(required_str(resource, "digest", where))
        tag = optional_str(resource, "tag", where)
        # Harbor quirk: for an untagged artifact `tag` holds the digest.
        tag = None if tag is None or is_digest(tag) else fields.tag(tag)
        if action == "delete":
            # DELETE_ARTIFACT removes the artifact with all its tags, and reports only the first.
            tag = None
        events.append(
            WebhookEvent(action, repository, digest, tag, None, f"{event_id}#{index}", when)
        )
    return events, []


def quay(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """Quay: `repo_push` names tags and no digest (the daemon resolves them); no delete exists.

    Every Quay event carries `repository` and `docker_url`; only `repo_push` has
    `updated_tags`: a list today, an object of tag -> V1 image id (not a manifest digest) in
    older Quay. The "Test Notification" button sends the push's sample data, which alone has
    `pruned_image_count`, for sample tags that need not exist: it is acknowledged, not published.
    """
    repository = valid_repository(required_str(document, "repository", "body"))
    if "updated_tags" not in document:
        # build_queued/start/success/failure/cancelled (build_id), vulnerability_found,
        # repo_mirror_sync_*, repo_image_expiry, quota_*: nothing was pushed.
        return [], ["quay_build" if "build_id" in document else "quay_other_event"]
    updated = document["updated_tags"]
    if isinstance(updated, dict):
        updated = list(updated)  # the older shape: the tags are the keys
    elif isinstance(updated, list) and "pruned_image_count" in document:
        return [], ["quay_test_notification"]
    tags = fields.entries({"updated_tags": updated}, "updated_tags", "body")
    events = []
    for index, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise EventError(
                f"updated_tags[{index}] is not a string", reason=RejectReason.INVALID_TAG
            )
        events.append(
            WebhookEvent(
                "push", repository, None, fields.tag(tag), None, f"{delivery.fallback_id}#{index}"
            )
        )
    return events, ([] if events else ["no_tags"])


def acr(document: dict[str, Any], _delivery: Delivery) -> Parsed:
    """Azure Container Registry: one distribution-style event; a delete carries no tag."""
    event_id = required_str(document, "id", "body")
    action = required_str(document, "action", "body")
    if action not in ("push", "delete"):
        # chart_push, chart_delete, quarantine, and ping (whose body has no target)
        return [], [f"acr_{fields.word(action)}"]
    target = fields.mapping(document, "target", "body")
    repository = valid_repository(required_str(target, "repository", "target"))
    digest = fields.digest(required_str(target, "digest", "target"))
    media_type = optional_str(target, "mediaType", "target")
    when = optional_str(document, "timestamp", "body")
    if action == "delete":
        return [WebhookEvent("delete", repository, digest, None, None, event_id, when)], []
    if media_type is not None and not is_manifest_type(media_type):
        return [], [IgnoreReason.UNSUPPORTED_MEDIA_TYPE.value]
    tag = fields.tag(optional_str(target, "tag", "target"))
    return [WebhookEvent("push", repository, digest, tag, media_type, event_id, when)], []


def zot(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """zot's events extension (CloudEvents): the type is the `Ce-Type` header (its prefix is
    configurable), the body is the data; a structured body's attributes count as those headers."""
    document, headers = _zot_binary(document, delivery.headers)
    kind = headers.get("ce-type", "")
    event_id = headers.get("ce-id") or delivery.fallback_id
    if kind.endswith(".image.updated"):
        action: Action = "push"
    elif kind.endswith(".image.deleted"):
        action = "delete"
    else:
        return [], [f"zot_{fields.word(kind.rpartition('.')[2] or 'untyped')}"]
    repository = valid_repository(required_str(document, "name", "body"))
    reference = required_str(document, "reference", "body")
    digest = fields.digest(required_str(document, "digest", "body"))
    # `reference` is the tag, or the digest when the push (or delete) was by digest.
    tag = None if is_digest(reference) else fields.tag(reference)
    media_type = optional_str(document, "mediaType", "body")
    when = headers.get("ce-time")
    if action == "delete":
        # Deleted by tag: zot removed that tag only (the manifest stays while tagged otherwise).
        delete_digest = None if tag is not None else digest
        return [WebhookEvent("delete", repository, delete_digest, tag, None, event_id, when)], []
    if media_type is not None and not is_manifest_type(media_type):
        return [], [IgnoreReason.UNSUPPORTED_MEDIA_TYPE.value]
    return [WebhookEvent("push", repository, digest, tag, media_type, event_id, when)], []


def artifactory(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """JFrog Artifactory, Docker domain: pushed / deleted (a tag).

    `data.sha256` is the checksum of the tag's manifest.json file, which is not known to equal
    the manifest digest, so a push is sent by tag and the daemon resolves it at the source. The
    repository a client pulls is `<repo_key>/<image_name>` (the repository path method, the one
    every Artifactory serves; `image_name` alone is right only with a host per repository).
    """
    domain = required_str(document, "domain", "body")
    kind = required_str(document, "event_type", "body")
    if domain != "docker" or kind not in ("pushed", "deleted"):
        return [], [f"artifactory_{fields.word(domain)}_{fields.word(kind)}"]
    data = fields.mapping(document, "data", "body")
    if data.get("sha256") == ARTIFACTORY_TEST_CHECKSUM:
        return [], ["artifactory_test"]
    image = required_str(data, "image_name", "data")
    key = optional_str(data, "repo_key", "data")
    repository = valid_repository(f"{key}/{image}" if key else image)
    tag = fields.tag(required_str(data, "tag", "data"))
    action: Action = "push" if kind == "pushed" else "delete"
    return [WebhookEvent(action, repository, None, tag, None, delivery.fallback_id)], []


def gar(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """Google Artifact Registry / GCR through a Pub/Sub push subscription (wrapped, or raw
    with payload unwrapping): base64 `message.data` of {action, digest, tag}.

    The project's `gcr` topic carries every location's messages (and gcr.io's): one naming
    another host than the source's registry (when known) is acknowledged and ignored.
    """
    host, fallback_id = delivery.host, delivery.fallback_id
    message = document.get("message")
    event_id = fallback_id
    when = None
    if isinstance(message, dict):
        event_id = str(message.get("messageId") or message.get("message_id") or fallback_id)
        when = optional_str(message, "publishTime", "message")
        data = fields.decoded(required_str(message, "data", "message"))
    else:
        data = document
    action = required_str(data, "action", "data")
    if action not in GAR_ACTIONS:
        return [], [f"gar_{fields.word(action)}"]
    digest_ref = optional_str(data, "digest", "data")
    tag_ref = optional_str(data, "tag", "data")
    repository, digest, tag = None, None, None
    if digest_ref is not None:
        repository, _, digest_text = digest_ref.rpartition("@")
        digest = fields.digest(digest_text)
    if tag_ref is not None:
        tag_repository, _, tag_text = tag_ref.rpartition(":")
        tag = fields.tag(tag_text)
        if repository is not None and tag_repository != repository:
            raise EventError(
                "data.digest and data.tag name different images",
                reason=RejectReason.INVALID_REPOSITORY,
            )
        repository = tag_repository
    if repository is None:
        raise EventError("data has neither digest nor tag", reason=RejectReason.MISSING_FIELD)
    path = fields.image_path(repository)  # refuses a reference without a host
    if host is not None and repository.partition("/")[0].lower() != host.lower():
        return [], ["gar_other_registry"]
    repository = valid_repository(path)
    kind: Action = "push" if action == "INSERT" else "delete"
    return [WebhookEvent(kind, repository, digest, tag, None, event_id, when)], []


def _zot_binary(
    document: dict[str, Any], headers: Mapping[str, str]
) -> tuple[dict[str, Any], Mapping[str, str]]:
    """A zot event in binary mode (the body is the data, the attributes are `ce-` headers),
    whichever mode it came in: a structured one's attributes become those headers."""
    if "specversion" not in document:
        return document, headers
    attributes = {
        f"ce-{name}": value
        for name in ("type", "id", "time")
        if isinstance(value := document.get(name), str)
    }
    return fields.mapping(document, "data", "body"), {**headers, **attributes}


def _is_harbor_cloudevent(document: dict[str, Any]) -> bool:
    kind = document.get("type")
    return "specversion" in document and isinstance(kind, str) and kind.startswith("harbor.")


def _is_pubsub_push(document: dict[str, Any]) -> bool:
    message = document.get("message")
    # Wrapped, or with payload unwrapping the bare message data.
    wrapped = isinstance(message, dict) and "data" in message
    return wrapped or document.get("action") in GAR_ACTIONS


def _is_acr(document: dict[str, Any]) -> bool:
    # One distribution-style event, not an envelope; its ping ("az acr webhook ping") has no
    # target.
    if isinstance(document.get("target"), dict) and "action" in document:
        return True
    return document.get("action") == "ping" and "id" in document and "timestamp" in document


ECR = WebhookFormat("ecr", ecr, by_shape=lambda d: "detail-type" in d)
HARBOR_CLOUDEVENTS = WebhookFormat(
    "harbor-cloudevents", harbor_cloudevents, by_shape=_is_harbor_cloudevent
)
ZOT = WebhookFormat(
    "zot",
    zot,
    # Binary mode: the type is a header, the body only the data.
    by_headers=lambda headers: "ce-type" in headers,
    # Structured mode: the envelope in the body (type, id, time, data).
    by_shape=lambda d: "specversion" in d and isinstance(d.get("data"), dict),
)
HARBOR = WebhookFormat(
    "harbor", harbor, by_shape=lambda d: "event_data" in d and isinstance(d.get("type"), str)
)
QUAY = WebhookFormat(
    "quay",
    quay,
    # Every Quay event has repository, docker_url and homepage; pushes also updated_tags.
    by_shape=lambda d: "repository" in d and ("updated_tags" in d or "docker_url" in d),
)
ARTIFACTORY = WebhookFormat(
    "artifactory", artifactory, by_shape=lambda d: "domain" in d and "event_type" in d
)
GAR = WebhookFormat("gar", gar, by_shape=_is_pubsub_push)
ACR = WebhookFormat("acr", acr, by_shape=_is_acr)
