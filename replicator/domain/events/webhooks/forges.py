"""Forges that host a container registry beside git: GitHub Packages (GHCR) and Gitea/Forgejo.

Gitea and Forgejo send GitHub's `X-GitHub-Event` header too (for tools written for GitHub), with
their own `X-Gitea-Event` / `X-Forgejo-Event`; their package body is their own, so those headers
decide first (webhooks.recognise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from replicator.domain.events.fields import optional_str, required_str, valid_repository
from replicator.domain.events.webhooks import fields
from replicator.domain.events.webhooks.formats import Action, Parsed, WebhookEvent
from replicator.domain.images.refs import is_digest

GITEA_EVENT_HEADERS = ("x-forgejo-event", "x-gitea-event")


def github(document: dict[str, Any], headers: Mapping[str, str], fallback_id: str) -> Parsed:
    """GitHub Packages `registry_package` / `package` (published, updated); no delete exists."""
    kind = headers.get("x-github-event", "registry_package")
    if kind not in ("registry_package", "package"):
        return [], [f"github_{fields.word(kind)}"]  # ping, and events of other kinds
    action = required_str(document, "action", "body")
    if action not in ("published", "updated"):
        return [], [f"github_{fields.word(action)}"]
    package = fields.mapping(document, kind, "body")
    package_type = str(package.get("package_type", "")).lower()
    if package_type not in ("container", "docker"):
        return [], ["github_not_container"]
    version = fields.mapping(package, "package_version", kind)
    metadata = fields.mapping(version, "container_metadata", "package_version")
    tag_info = metadata.get("tag")
    tag_info = tag_info if isinstance(tag_info, dict) else {}
    digest = fields.digest(
        optional_str(tag_info, "digest", "tag") or required_str(version, "name", "package_version")
    )
    tag = fields.tag(optional_str(tag_info, "name", "tag"))  # "" when untagged
    manifest = metadata.get("manifest")
    media_type = (
        optional_str(manifest, "media_type", "manifest") if isinstance(manifest, dict) else None
    )
    # GHCR names packages in lower case whatever the owner's spelling ("ghcr.io/Octo-Org/app"
    # is pulled as ghcr.io/octo-org/app), as Docker's references must be.
    repository = valid_repository(
        fields.image_path(required_str(version, "package_url", "package_version")).lower()
    )
    event_id = headers.get("x-github-delivery") or fallback_id
    return [WebhookEvent("push", repository, digest, tag, media_type, event_id)], []


def gitea(document: dict[str, Any], headers: Mapping[str, str], fallback_id: str) -> Parsed:
    """Gitea / Forgejo `package` events (created, deleted) of container packages.

    `package.version` is the tag, or the digest for an untagged manifest; the image is
    `<owner>/<name>` in lower case (Gitea stores container names so). No digest is sent with a
    tag: the daemon resolves the tag at the source.
    """
    kind = next((headers[h] for h in GITEA_EVENT_HEADERS if h in headers), "package")
    if kind != "package":
        return [], [f"gitea_{fields.word(kind)}"]  # push, release, issues...
    action_word = required_str(document, "action", "body")
    if action_word not in ("created", "deleted"):
        return [], [f"gitea_{fields.word(action_word)}"]
    package = fields.mapping(document, "package", "body")
    if str(package.get("type", "")).lower() != "container":
        return [], ["gitea_not_container"]
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
