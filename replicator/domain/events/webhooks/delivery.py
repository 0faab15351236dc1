"""A webhook delivery, what a format is, and the events a format's parser makes of a delivery.

A format (`WebhookFormat`) is a name, how a delivery is recognised as one (its headers, else its
body's shape) and a parser from the body to `WebhookEvent`s and the reasons of the ignored rest.
Each lives in the module of its registry; `replicator.domain.events.webhooks.FORMATS` lists them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from replicator.domain.events import RejectReason
from replicator.errors import EventError

# Length of the body-hash event ids of formats that carry no id of their own: 128 bits, so
# two different bodies never share one, and a retried delivery (same body) keeps it.
_BODY_ID_HEX = 32

Action = Literal["push", "delete"]
Parsed = tuple[list["WebhookEvent"], list[str]]


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A manifest push or delete as a registry reported it; `digest` None on a push means the
    daemon resolves `tag` at the source."""

    action: Action
    repository: str
    digest: str | None
    tag: str | None
    media_type: str | None
    event_id: str
    timestamp: str | None = None
    # The sender's User-Agent as the registry reported it (distribution's request.useragent),
    # kept so the daemon can tell its own replicas' echoes (domain/events/echoes.py).
    agent: str | None = None

    def as_distribution(self, format_name: str) -> dict[str, Any]:
        """This event as a distribution notification event, marked with `format_name`."""
        target: dict[str, Any] = {"repository": self.repository}
        for key, value in (
            ("digest", self.digest),
            ("tag", self.tag),
            ("mediaType", self.media_type),
        ):
            if value is not None:
                target[key] = value
        event: dict[str, Any] = {
            "id": self.event_id, "action": self.action, "format": format_name, "target": target
        }  # fmt: skip
        if self.timestamp is not None:
            event["timestamp"] = self.timestamp
        if self.agent is not None:
            event["request"] = {"useragent": self.agent}
        return event


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery as a parser may read it besides its parsed body."""

    body: bytes
    headers: Mapping[str, str]  # lower-case names
    source: str  # the configured source registry's name
    location: tuple[str, str]  # its configured (account, region)
    host: str | None  # its registry's host[:port], which a body naming a host must match
    fallback_id: str  # the event id for a body that carries none (body_id)


def _never(_: Any) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class WebhookFormat:
    """A registry's webhook format: `name` (the config word and the metric label), what
    recognises a delivery as one, and `parse` (raises EventError when the body is unusable)."""

    name: str
    parse: Callable[[dict[str, Any], Delivery], Parsed]
    # The delivery's headers name this format (asked first, before any body's shape).
    by_headers: Callable[[Mapping[str, str]], bool] = _never
    # A JSON object of this format's shape (asked in FORMATS' order: most specific first).
    by_shape: Callable[[dict[str, Any]], bool] = _never
    # The body is already the bus envelope, published as sent (distribution's).
    verbatim: bool = False


def body_id(body: bytes) -> str:
    """A stable id for a delivery that carries none: retries of one delivery share it."""
    return "body-" + hashlib.sha256(body).hexdigest()[:_BODY_ID_HEX]


def content_type(headers: Mapping[str, str]) -> str:
    """The media type of the `content-type` header, lower case, without parameters."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def form_payload(body: bytes) -> bytes:
    """The `payload` field of a form-encoded body (GitHub's alternative content type)."""
    values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=16).get("payload")
    if not values:
        raise EventError("the form body has no payload field", reason=RejectReason.MISSING_FIELD)
    return values[0].encode()
