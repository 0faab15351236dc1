"""Registry webhooks -> the one event envelope the daemon consumes (pure; the bridge does I/O).

Every registry posts its own body (samples and field notes: tests/data/webhooks/README.md).
`recognise` names the format from the headers and the body's shape; `normalise` turns the body
into `Webhook`: the manifest pushes and deletes it reports, and what it reported that needs no
work (blob pushes, scans, pings...). `Webhook.envelope()` is the bus payload: a distribution
notification envelope whose events carry `"format"`, which tells the daemon's parser that the
event came through the bridge, so a missing media type (Harbor, GAR...) is allowed and a push
with a tag but no digest (Quay) is resolved by the daemon with a HEAD at the source.

A distribution body is already that envelope: the bridge checks it with the daemon's own parser
and publishes it byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from replicator.domain.events import Ignored, PushEvent, RejectReason, TagPush
from replicator.domain.events.distribution import DISTRIBUTION_EVENTS_MEDIA_TYPES
from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES, parse_payload
from replicator.domain.events.webhooks import fields, forges, formats, hosted
from replicator.domain.events.webhooks.formats import WebhookEvent
from replicator.errors import EventError

__all__ = ["EMPTY_BODY", "Webhook", "WebhookEvent", "WebhookFormat", "normalise", "recognise"]

# The ignore reason of a delivery without a body (Harbor's Test Endpoint).
EMPTY_BODY = "empty_body"


class WebhookFormat(StrEnum):
    """The body formats the bridge understands; the values are config words and metric labels."""

    DISTRIBUTION = "distribution"
    ECR = "ecr"
    HARBOR = "harbor"
    HARBOR_CLOUDEVENTS = "harbor-cloudevents"
    QUAY = "quay"
    ACR = "acr"
    ZOT = "zot"
    GITHUB = "github"
    ARTIFACTORY = "artifactory"
    GAR = "gar"
    GITEA = "gitea"
    DOCKER_HUB = "dockerhub"
    ALIBABA = "alibaba"
    NEXUS = "nexus"


@dataclass(frozen=True, slots=True)
class Webhook:
    """One delivery, normalised: the events to publish and the reasons of the rest."""

    format: WebhookFormat
    events: tuple[WebhookEvent, ...]
    ignored: tuple[str, ...] = ()

    def envelope(self) -> bytes:
        """The bus payload: a distribution envelope of the kept events, marked with the format."""
        return json.dumps(
            {"events": [event.as_distribution(self.format.value) for event in self.events]},
            separators=(",", ":"),
        ).encode()


def recognise(headers: Mapping[str, str], document: Any) -> WebhookFormat | None:
    """The format of a body (parsed JSON) sent with `headers` (lower-case names), or None."""
    if _content_type(headers) in DISTRIBUTION_EVENTS_MEDIA_TYPES:
        return WebhookFormat.DISTRIBUTION
    if any(header in headers for header in forges.GITEA_EVENT_HEADERS):
        # Before GitHub's: Gitea and Forgejo send X-GitHub-Event as well.
        return WebhookFormat.GITEA
    if "x-github-event" in headers:
        return WebhookFormat.GITHUB
    if "x-nexus-webhook-id" in headers:
        return WebhookFormat.NEXUS
    if "ce-type" in headers:
        # zot's CloudEvents binary mode: the type is a header, the body is only the data.
        return WebhookFormat.ZOT
    if not isinstance(document, dict):
        return None
    for shape, found in _SHAPES:
        if shape(document):
            return found
    return None


def _is_harbor_cloudevent(document: dict[str, Any]) -> bool:
    kind = document.get("type")
    return "specversion" in document and isinstance(kind, str) and kind.startswith("harbor.")


def _is_quay(document: dict[str, Any]) -> bool:
    # Every Quay event has repository, docker_url and homepage; pushes also updated_tags.
    return "repository" in document and ("updated_tags" in document or "docker_url" in document)


def _is_pubsub_push(document: dict[str, Any]) -> bool:
    message = document.get("message")
    return isinstance(message, dict) and "data" in message


# Body shapes, most specific first (a Harbor CloudEvent also has `type`, ACR an `action`).
_SHAPES: tuple[tuple[Callable[[dict[str, Any]], bool], WebhookFormat], ...] = (
    (lambda d: isinstance(d.get("events"), list), WebhookFormat.DISTRIBUTION),
    (lambda d: "detail-type" in d, WebhookFormat.ECR),
    (hosted.is_alibaba, WebhookFormat.ALIBABA),
    (lambda d: isinstance(d.get("push_data"), dict), WebhookFormat.DOCKER_HUB),
    (lambda d: "repositoryName" in d and ("component" in d or "asset" in d), WebhookFormat.NEXUS),
    (_is_harbor_cloudevent, WebhookFormat.HARBOR_CLOUDEVENTS),
    # zot's structured CloudEvents mode: the envelope in the body (type, id, time, data).
    (lambda d: "specversion" in d and isinstance(d.get("data"), dict), WebhookFormat.ZOT),
    (lambda d: "event_data" in d and isinstance(d.get("type"), str), WebhookFormat.HARBOR),
    # Every Quay event has repository, docker_url and homepage; pushes also updated_tags.
    (
        lambda d: "repository" in d and ("updated_tags" in d or "docker_url" in d),
        WebhookFormat.QUAY,
    ),
    (lambda d: "registry_package" in d or "package" in d, WebhookFormat.GITHUB),
    (lambda d: "domain" in d and "event_type" in d, WebhookFormat.ARTIFACTORY),
    (_is_pubsub_push, WebhookFormat.GAR),
    # A Pub/Sub push subscription with payload unwrapping posts the bare message data.
    (lambda d: d.get("action") in formats.GAR_ACTIONS, WebhookFormat.GAR),
    # ACR posts one distribution-style event, not an envelope.
    (lambda d: isinstance(d.get("target"), dict) and "action" in d, WebhookFormat.ACR),
    # ACR's ping ("az acr webhook ping") has no target.
    (lambda d: d.get("action") == "ping" and "id" in d and "timestamp" in d, WebhookFormat.ACR),
)


def normalise(
    body: bytes,
    headers: Mapping[str, str],
    *,
    source: str,
    location: tuple[str, str],
    pinned: WebhookFormat | None = None,
    host: str | None = None,
) -> Webhook:
    """Recognise (unless `pinned`) and normalise one delivery for `source`, whose configured
    (account, region) is `location` and registry `host` (None: unknown); raise EventError with
    a RejectReason when it is unusable.

    `headers` are lower-case names.
    """
    if len(body) > MAX_PAYLOAD_BYTES:
        raise EventError(
            f"the body is {len(body)} bytes, more than {MAX_PAYLOAD_BYTES}",
            reason=RejectReason.TOO_LARGE,
        )
    if not body.strip():
        # Harbor's "Test Endpoint" (1.10 to 2.4) posts no body at all, and no other sender does:
        # a connectivity check, acknowledged.
        return Webhook(pinned or WebhookFormat.HARBOR, (), (EMPTY_BODY,))
    document = _document(body, headers)
    found = pinned or recognise(headers, document)
    if found is None:
        raise EventError(
            "the body is no registry webhook this bridge knows (distribution, ECR, Harbor, "
            "Quay, ACR, zot, GitHub, Gitea/Forgejo, Artifactory, GAR, Docker Hub, Alibaba ACR, "
            "Nexus); set the source's format to pin one",
            reason=RejectReason.UNKNOWN_FORMAT,
        )
    if found is WebhookFormat.DISTRIBUTION:
        return _distribution(body, source)
    if not isinstance(document, dict):
        raise EventError(
            f"a {found.value} body must be a JSON object, not {type(document).__name__}",
            reason=RejectReason.UNSUPPORTED_EVENT,
        )
    fallback_id = formats.body_id(body)
    if found is WebhookFormat.ECR:
        events, ignored = formats.ecr(document, location)
    else:
        events, ignored = _PARSERS[found](document, headers, fallback_id, host)
    return Webhook(found, tuple(events), tuple(ignored))


# Each format's parser, called with the body, the headers (event kinds, delivery ids, zot's
# attributes), the id to use when the body carries none, and the source's registry host (None:
# unknown), which a body naming a host must match.
_Parser = Callable[[dict[str, Any], Mapping[str, str], str, str | None], formats.Parsed]
_PARSERS: Mapping[WebhookFormat, _Parser] = {
    WebhookFormat.ZOT: lambda document, headers, id_, _host: formats.zot(
        *_zot_binary(document, headers), id_
    ),
    WebhookFormat.GITHUB: forges.github,
    WebhookFormat.GITEA: forges.gitea,
    WebhookFormat.NEXUS: lambda document, headers, id_, _host: hosted.nexus(document, headers, id_),
    WebhookFormat.GAR: lambda document, _headers, id_, host: formats.gar(document, id_, host),
    WebhookFormat.HARBOR: lambda document, _headers, id_, _host: formats.harbor(document, id_),
    WebhookFormat.HARBOR_CLOUDEVENTS: lambda document, *_: formats.harbor_cloudevents(document),
    WebhookFormat.QUAY: lambda document, _headers, id_, _host: formats.quay(document, id_),
    WebhookFormat.ACR: lambda document, *_: formats.acr(document),
    WebhookFormat.ARTIFACTORY: lambda document, _headers, id_, _host: formats.artifactory(
        document, id_
    ),
    WebhookFormat.DOCKER_HUB: lambda document, _headers, id_, host: hosted.docker_hub(
        document, id_, host
    ),
    WebhookFormat.ALIBABA: lambda document, _headers, id_, host: hosted.alibaba(
        document, id_, host
    ),
}


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


def _content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _document(body: bytes, headers: Mapping[str, str]) -> Any:
    if _content_type(headers) == "application/x-www-form-urlencoded":
        # GitHub's "application/x-www-form-urlencoded" webhooks: the JSON is the `payload` field.
        body = formats.form_payload(body)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and over-long integers;
        # RecursionError is what deeply nested arrays raise.
        raise EventError(
            f"the body is not JSON: {str(exc)[:200]}", reason=RejectReason.INVALID_JSON
        ) from exc


def _distribution(body: bytes, source: str) -> Webhook:
    parsed = parse_payload(body, topic_source=source, locate=lambda _a, _r: None, sources=None)
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
                    "delete",
                    event.repository,
                    event.digest,
                    event.tag,
                    None,
                    event.event_id,
                    agent=event.agent,
                )
            )
    return Webhook(WebhookFormat.DISTRIBUTION, tuple(events), tuple(ignored))
