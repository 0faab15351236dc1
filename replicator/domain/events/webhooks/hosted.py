"""Docker Hub, Alibaba Cloud ACR and Sonatype Nexus: registries whose webhooks name a tag.

Docker Hub's body is `push_data` (tag, pusher, pushed_at) and `repository` (repo_name), with no
digest and no delete event. Alibaba Cloud's Container Registry copies that shape and adds the
manifest digest (`push_data.digest`) and the region. Nexus Repository sends one body per
component event (`X-Nexus-Webhook-ID: rm:repository:component`): a Docker component's `name` is
the image and its `version` the tag; created, updated and deleted.
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
from replicator.errors import EventError

NEXUS_COMPONENT_EVENT = "rm:repository:component"
# The names Docker Hub's registry is reached by; its webhooks' callback_url is on
# registry.hub.docker.com (older bodies) or hub.docker.com.
DOCKER_HUB_HOSTS = frozenset(
    {"docker.io", "registry-1.docker.io", "index.docker.io", "registry.hub.docker.com",
     "hub.docker.com"}
)  # fmt: skip
_OFFICIAL_PREFIX = "_/"


def is_alibaba(document: dict[str, Any]) -> bool:
    """Alibaba's push: Docker Hub's shape with `repository.repo_full_name` and a digest."""
    push, repository = document.get("push_data"), document.get("repository")
    return (
        isinstance(push, dict)
        and isinstance(repository, dict)
        and "repo_full_name" in repository
        and "digest" in push
    )


def docker_hub(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """Docker Hub's repository webhook: a tag was pushed (the daemon resolves its digest).

    Its `callback_url` names Docker Hub (registry.hub.docker.com): the source's registry
    (`host`, when known) must be Docker Hub too. Docker Hub's bodies of 2013 named no tag
    (acknowledged: there is nothing to resolve) and spelled official images `_/name`, which
    clients pull as `library/name`.
    """
    fallback_id, host = delivery.fallback_id, delivery.host
    push = fields.mapping(document, "push_data", "body")
    repository = fields.mapping(document, "repository", "body")
    callback = optional_str(document, "callback_url", "body")
    if callback is not None:
        fields.check_host(urlsplit(callback).netloc, host, "callback_url", DOCKER_HUB_HOSTS)
    repo_name = required_str(repository, "repo_name", "repository")
    if repo_name.startswith(_OFFICIAL_PREFIX):
        repo_name = "library/" + repo_name.removeprefix(_OFFICIAL_PREFIX)
    name = valid_repository(repo_name)
    tag = optional_str(push, "tag", "push_data")
    if tag is None:
        return [], ["dockerhub_no_tag"]
    return [WebhookEvent("push", name, None, fields.tag(tag), None, fallback_id)], []


def alibaba(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """Alibaba Cloud ACR's push trigger: tag and manifest digest of `repo_full_name`.

    Its documentation's sample spells a repository `repoTest`; the registry serves names in lower
    case only, as every distribution does, so the name is lower-cased. `repository.region` must
    be the region of the source's registry when that is an Alibaba host (`registry.<region>.
    aliyuncs.com`, `registry-vpc.<region>...`, `<instance>-registry.<region>.cr.aliyuncs.com`).
    """
    fallback_id, host = delivery.fallback_id, delivery.host
    push = fields.mapping(document, "push_data", "body")
    repository = fields.mapping(document, "repository", "body")
    region = optional_str(repository, "region", "repository")
    if region is not None and host is not None:
        labels = fields.bare_host(host).split(".")
        if labels[-2:] == ["aliyuncs", "com"] and region.lower() not in labels:
            raise EventError(
                f"the push is of region {region[:40]!r}, not of this source's registry ({host})",
                reason=RejectReason.UNKNOWN_ACCOUNT_REGION,
            )
    name = valid_repository(required_str(repository, "repo_full_name", "repository").lower())
    digest = fields.digest(required_str(push, "digest", "push_data"))
    tag = fields.tag(optional_str(push, "tag", "push_data"))
    return [WebhookEvent("push", name, digest, tag, None, fallback_id)], []


def nexus(document: dict[str, Any], delivery: Delivery) -> Parsed:
    """Nexus Repository's component webhook for Docker components: created or updated is a
    push of the tag, deleted a delete of it; asset and audit events are acknowledged."""
    headers, fallback_id = delivery.headers, delivery.fallback_id
    kind = headers.get("x-nexus-webhook-id", NEXUS_COMPONENT_EVENT)
    if kind != NEXUS_COMPONENT_EVENT or "component" not in document:
        return [], [f"nexus_{fields.word(kind.rpartition(':')[2] or 'event')}"]
    action_word = required_str(document, "action", "body")
    if action_word not in ("CREATED", "UPDATED", "DELETED"):
        return [], [f"nexus_{fields.word(action_word)}"]
    component = fields.mapping(document, "component", "body")
    if str(component.get("format", "")).lower() != "docker":
        return [], ["nexus_not_docker"]
    name = valid_repository(required_str(component, "name", "component"))
    tag = fields.tag(required_str(component, "version", "component"))
    action: Action = "delete" if action_word == "DELETED" else "push"
    event_id = headers.get("x-nexus-webhook-delivery") or fallback_id
    # Its `timestamp` ("2016-11-10T23:57:49.664+0000") is left out: the push's time is read
    # from the source when the tag is resolved.
    return [WebhookEvent(action, name, None, tag, None, event_id)], []


ALIBABA = WebhookFormat("alibaba", alibaba, by_shape=is_alibaba)
DOCKER_HUB = WebhookFormat(
    "dockerhub", docker_hub, by_shape=lambda d: isinstance(d.get("push_data"), dict)
)
NEXUS = WebhookFormat(
    "nexus",
    nexus,
    by_headers=lambda headers: "x-nexus-webhook-id" in headers,
    by_shape=lambda d: "repositoryName" in d and ("component" in d or "asset" in d),
)
