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

A format is a `WebhookFormat` (delivery.py: its name, what recognises it, its parser) declared
in its registry's module, and one line in FORMATS below: a new format is one module and one line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from replicator.domain.events import RejectReason
from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES
from replicator.domain.events.webhooks import forges, formats, hosted
from replicator.domain.events.webhooks.delivery import (
    Delivery,
    WebhookEvent,
    WebhookFormat,
    body_id,
    content_type,
    form_payload,
)
from replicator.domain.events.webhooks.distribution import DISTRIBUTION
from replicator.errors import EventError

__all__ = [
    "EMPTY_BODY",
    "FORMATS",
    "Webhook",
    "WebhookEvent",
    "WebhookFormat",
    "format_named",
    "normalise",
    "recognise",
]

# Every format the bridge knows, in the order a delivery is recognised: the first whose headers
# name it, else the first whose shape the body has (most specific first: a Harbor CloudEvent also
# has zot's `specversion`, Alibaba's body Docker Hub's `push_data`, ACR's an `action`).
FORMATS: tuple[WebhookFormat, ...] = (
    DISTRIBUTION,
    formats.ECR,
    forges.GITEA,  # before GitHub: Gitea and Forgejo send X-GitHub-Event as well
    hosted.ALIBABA,
    hosted.DOCKER_HUB,
    hosted.NEXUS,
    formats.HARBOR_CLOUDEVENTS,
    formats.ZOT,
    formats.HARBOR,
    formats.QUAY,
    forges.GITHUB,
    formats.ARTIFACTORY,
    formats.GAR,
    formats.ACR,
)
_BY_NAME = {known.name: known for known in FORMATS}

# The ignore reason of a delivery without a body (Harbor's Test Endpoint).
EMPTY_BODY = "empty_body"


@dataclass(frozen=True, slots=True)
class Webhook:
    """One delivery, normalised: the events to publish and the reasons of the rest."""

    format: WebhookFormat
    events: tuple[WebhookEvent, ...]
    ignored: tuple[str, ...] = ()

    def envelope(self) -> bytes:
        """The bus payload: a distribution envelope of the kept events, marked with the format."""
        return json.dumps(
            {"events": [event.as_distribution(self.format.name) for event in self.events]},
            separators=(",", ":"),
        ).encode()


def format_named(name: str) -> WebhookFormat | None:
    """The format a config word names, or None."""
    return _BY_NAME.get(name)


def recognise(headers: Mapping[str, str], document: Any) -> WebhookFormat | None:
    """The format of a body (parsed JSON) sent with `headers` (lower-case names), or None."""
    for known in FORMATS:
        if known.by_headers(headers):
            return known
    if not isinstance(document, dict):
        return None
    for known in FORMATS:
        if known.by_shape(document):
            return known
    return None


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
        return Webhook(pinned or formats.HARBOR, (), (EMPTY_BODY,))
    document = _document(body, headers)
    found = pinned or recognise(headers, document)
    if found is None:
        raise EventError(
            "the body is no registry webhook this bridge knows "
            f"({', '.join(known.name for known in FORMATS)}); set the source's format to pin one",
            reason=RejectReason.UNKNOWN_FORMAT,
        )
    if not found.verbatim and not isinstance(document, dict):
        raise EventError(
            f"a {found.name} body must be a JSON object, not {type(document).__name__}",
            reason=RejectReason.UNSUPPORTED_EVENT,
        )
    delivery = Delivery(body, headers, source, location, host, body_id(body))
    events, ignored = found.parse(document, delivery)
    return Webhook(found, tuple(events), tuple(ignored))


def _document(body: bytes, headers: Mapping[str, str]) -> Any:
    if content_type(headers) == "application/x-www-form-urlencoded":
        # GitHub's "application/x-www-form-urlencoded" webhooks: the JSON is the `payload` field.
        body = form_payload(body)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and over-long integers;
        # RecursionError is what deeply nested arrays raise.
        raise EventError(
            f"the body is not JSON: {str(exc)[:200]}", reason=RejectReason.INVALID_JSON
        ) from exc
