"""The registry of webhook formats: every declared format is listed once, configurable by its
name, and a format is all the bridge needs to take a new registry's body."""

from __future__ import annotations

import importlib
import json
import pkgutil
from typing import Any

import pytest

from replicator.config.bridge import BridgeSourceConfig
from replicator.domain.events.webhooks import (
    FORMATS,
    WebhookEvent,
    WebhookFormat,
    format_named,
    normalise,
    recognise,
)
from replicator.domain.events.webhooks.delivery import Delivery, Parsed

PACKAGE = "replicator.domain.events.webhooks"
DIGEST = "sha256:" + "ab" * 32


def _declared() -> list[WebhookFormat]:
    """Every WebhookFormat a module of the webhooks package declares at its top level."""
    package = importlib.import_module(PACKAGE)
    found: list[WebhookFormat] = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        found.extend(v for v in vars(module).values() if isinstance(v, WebhookFormat))
    return found


def test_every_declared_format_is_registered_once() -> None:
    """A format declared in a module but missing from FORMATS (or listed twice, or two of one
    name) fails here: registering one is its one line in FORMATS."""
    declared = {id(known): known.name for known in _declared()}
    assert sorted(declared.values()) == sorted(known.name for known in FORMATS)
    assert len({known.name for known in FORMATS}) == len(FORMATS)


@pytest.mark.parametrize("known", FORMATS, ids=lambda known: known.name)
def test_every_format_is_a_config_word(known: WebhookFormat) -> None:
    """[bridge.sources.<name>] format takes each registered name, and it pins that format."""
    section = BridgeSourceConfig.model_validate({"format": known.name, "auth": "bearer"})
    assert format_named(section.format) is known


def test_an_unknown_format_word_is_refused() -> None:
    """A format word no module declares is a config error naming the known ones."""
    with pytest.raises(ValueError, match="dockerhub"):
        BridgeSourceConfig.model_validate({"format": "dockerhubb", "auth": "bearer"})


def _acme(document: dict[str, Any], delivery: Delivery) -> Parsed:
    image = document["acme_image"]
    event_id = delivery.headers.get("x-acme-delivery") or delivery.fallback_id
    return [WebhookEvent("push", image["name"], image["digest"], None, None, event_id)], []


ACME = WebhookFormat("acme", _acme, by_shape=lambda document: "acme_image" in document)


def test_a_format_record_is_all_a_new_registry_needs() -> None:
    """A format not in FORMATS is unknown to recognition; pinned, its record alone parses the
    delivery (headers, the body-hash id) into the envelope the daemon reads."""
    body = json.dumps({"acme_image": {"name": "team/app", "digest": DIGEST}}).encode()
    headers = {"content-type": "application/json"}
    assert recognise(headers, json.loads(body)) is None
    webhook = normalise(body, headers, source="src", location=("", ""), pinned=ACME)
    assert webhook.format is ACME
    assert [(e.repository, e.digest, e.event_id[:5]) for e in webhook.events] == [
        ("team/app", DIGEST, "body-")
    ]
    assert json.loads(webhook.envelope())["events"][0]["format"] == "acme"
