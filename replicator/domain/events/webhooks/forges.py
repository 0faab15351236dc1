"""Forges that host a container registry beside git: GitHub Packages (GHCR) and Gitea/Forgejo.

Gitea and Forgejo send GitHub's `X-GitHub-Event` header too (for tools written for GitHub), with
their own `X-Gitea-Event` / `X-Forgejo-Event`; their package body is their own, so those headers
decide first (GITEA comes before GITHUB in webhooks.FORMATS).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from replicator.domain.events import RejectReason
from replicator.domain.events.fields import optional_str, required_str, valid_repository
from replicator.domain.events.webhooks import fields
from replicator.domain.events.webhooks.delivery import (
    Action,
    Delivery,
    Parsed,
    WebhookEvent,
    WebhookFormat,
)
from replicator.domain.images.refs import is_digest
from replicator.errors import EventError

GITEA_EVENT_HEADERS = ("x-forgejo-event", "x-gitea-event")
_CONTAINER_KINDS = frozenset({"container", "docker"})


def github(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """GitHub Packages `registry_package` / `package` (published, updated); no delete exists.

    A container package is one whose `package_type` or `ecosystem` says so (octokit's published
    example has package_type npm, ecosystem docker). The digest is the version's `name`, by
    which GHCR names a container version (the tag's `digest` repeats it; octokit's example has a
    placeholder there). `package_url` names the registry: it must be the source's (`host`).
    """
    headers, fallback_id, host = delivery.headers, delivery.fallback_id, delivery.host
    kind = headers.get("x-github-event", "registry_package")
    if kind not in ("registry_package", "package"):
        return [], [f"github_{fields.word(kind)}"]  # ping, and events of other kinds
    action = required_str(document, "action", "body")
    if action not in ("published", "updated"):
        return [], [f"github_{fields.word(action)}"]
    package = fields.mapping(document, kind, "body")
    kinds = {str(package.get(key, "")).lower() for key in ("package_type", "ecosystem")}
    if not kinds & _CONTAINER_KINDS:
        return [], ["github_not_container"]
    version = fields.mapping(package, "package_version", kind)
    metadata = fields.mapping(version, "container_metadata", "package_version")
    tag_info = metadata.get("tag")
    tag_info = tag_info if isinstance(tag_info, dict) else {}
    name = optional_str(version, "name", "package_version")
    digest = fields.digest(
        name if name is not None and is_digest(name) else optional_str(tag_info, "digest", "tag")
    )
    if digest is None:
        raise EventError(
            "package_version names no digest (name, container_metadata.tag.digest)",
            reason=RejectReason.MISSING_FIELD,
        )
    tag = fields.tag(optional_str(tag_info, "name", "tag"))  # "" when untagged
    manifest = metadata.get("manifest")
    media_type = (
        optional_str(manifest, "media_type", "manifest") if isinstance(manifest, dict) else None
    )
    # GHCR names packages in lower case whatever the owner's spelling ("ghcr.io/Octo-Org/app"
    # is pulled as ghcr.io/octo-org/app), as Docker's references must be.
    package_url = required_str(version, "package_url", "package_version")
    fields.check_host(package_url.partition("/")[0], host, "package_url")
    repository = valid_repository(fields.image_path(package_url).lower())
    event_id = headers.get("x-github-delivery") or fallback_id
    return [WebhookEvent("push", repository, digest, tag, media_type, event_id)], []


def gitea(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """Gitea / Forgejo `package` events (created, deleted) of container packages.

    `package.version` is the tag, or the digest for an untagged manifest; the image is
    `<owner>/<name>` in lower case (Gitea stores container names so). No digest is sent with a
    tag: the daemon resolves the tag at the source. Gitea serves its registry on the host of
    its web pages: `package.html_url` must name the source's registry (`host`).
    """
    headers, fallback_id, host = delivery.headers, delivery.fallback_id, delivery.host
    kind = next((headers[h] for h in GITEA_EVENT_HEADERS if h in headers), "package")
    if kind != "package":
        return [], [f"gitea_{fields.word(kind)}"]  # push, release, issues...
    action_word = required_str(document, "action", "body")
    if action_word not in ("created", "deleted"):
        return [], [f"gitea_{fields.word(action_word)}"]
    package = fields.mapping(document, "package", "body")
    if str(package.get("type", "")).lower() != "container":
        return [], ["gitea_not_container"]
    html_url = optional_str(package, "html_url", "package")
    if html_url is not None:
        fields.check_host(urlsplit(html_url).netloc, host, "package.html_url")
    owner = required_str(fields.mapping(package, "owner", "package"), "login", "package.owner")
    repository = valid_repository(f"{owner}/{required_str(package, 'name', 'package')}".lower())
    version = required_str(package, "version", "package")
    digest = fields.digest(version) if is_digest(version) else None
    tag = None if digest is not None else fields.tag(version)
    action: Action = "push" if action_word == "created" else "delete"
    event_id = headers.get("x-forgejo-delivery") or headers.get("x-gitea-delivery") or fallback_id
    # `created_at` is when the version was pushed: no time of a delete.
    when = optional_str(package, "created_at", "package") if action == "push" else None
    return [WebhookEvent(action, repository, digest, tag, None, event_id, when)], []


GITEA = WebhookFormat(
    "gitea", gitea, by_headers=lambda headers: any(h in headers for h in GITEA_EVENT_HEADERS)
)
GITHUB = WebhookFormat(
    "github",
    github,
    by_headers=lambda headers: "x-github-event" in headers,
    by_shape=lambda d: "registry_package" in d or "package" in d,
)
