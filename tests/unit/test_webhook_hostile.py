"""Hostile bodies for the parsers of Docker Hub, Nexus, Alibaba ACR, zot's structured mode and
Gitea/Forgejo (and the hosts GitHub names): oversize, `..` and malformed names, wrong types,
missing fields, deep nesting and another registry's host are refused with their reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from replicator.domain.events import RejectReason
from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES
from replicator.errors import EventError
from tests.unit.test_webhooks import SAMPLES, edited, run

_DELETE = object()

# Where each sample keeps what the parser reads (paths into the parsed JSON).
FIELDS: dict[str, dict[str, list[Any]]] = {
    "dockerhub-push.json": {"repository": ["repository", "repo_name"], "tag": ["push_data", "tag"]},
    "nexus-push.json": {"repository": ["component", "name"], "tag": ["component", "version"]},
    "alibaba-push.json": {"repository": ["repository", "repo_full_name"],
                          "digest": ["push_data", "digest"], "tag": ["push_data", "tag"]},
    "zot-cloudevents-push.json": {"repository": ["data", "name"], "digest": ["data", "digest"],
                                  "tag": ["data", "reference"]},
    "gitea-push.json": {"repository": ["package", "name"], "tag": ["package", "version"]},
}  # fmt: skip
BAD_VALUES = {
    "repository": ("prod/../../etc", RejectReason.INVALID_REPOSITORY),
    "digest": ("sha256:not-hex", RejectReason.INVALID_DIGEST),
    "tag": ("v1/../../x", RejectReason.INVALID_TAG),
}
# What a wrongly typed or missing field may be refused as: the field's own reason, or missing.
TYPE_REASONS = {
    RejectReason.MISSING_FIELD, RejectReason.INVALID_TAG, RejectReason.INVALID_DIGEST,
    RejectReason.INVALID_REPOSITORY, RejectReason.UNSUPPORTED_EVENT, RejectReason.UNKNOWN_FORMAT,
}  # fmt: skip
# Fields a sender may leave out: Alibaba's push by digest has no tag; Docker Hub's bodies of
# 2013 had none (acknowledged, test_webhook_deliveries).
OPTIONAL = {("alibaba-push.json", "tag"), ("dockerhub-push.json", "tag")}
# The objects a sample's fields are in: each replaced by a list, a string and a number.
CONTAINERS = {
    "dockerhub-push.json": ["push_data", "repository"],
    "nexus-push.json": ["component"],
    "alibaba-push.json": ["push_data", "repository"],
    "zot-cloudevents-push.json": ["data"],
    "gitea-push.json": ["package"],
}


def changed(path: list[Any], value: Any) -> Any:
    """A change setting (or with _DELETE, removing) `path` of a parsed body."""

    def change(document: Any) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


def refusal(name: str, body: bytes, host: str | None = None) -> RejectReason:
    """The reason sample `name`'s sender gets for `body`."""
    with pytest.raises(EventError) as caught:
        run(name, body, host=host)
    return caught.value.reason


def _field_cases() -> list[Any]:
    cases = []
    for name, fields in FIELDS.items():
        for field, path in fields.items():
            value, reason = BAD_VALUES[field]
            stem = name.removesuffix(".json")
            cases.append(pytest.param(name, path, value, {reason}, id=f"{stem}-bad-{field}"))
            cases.append(pytest.param(name, path, 42, TYPE_REASONS, id=f"{stem}-{field}-number"))
            cases.append(pytest.param(name, path, ["x"], TYPE_REASONS, id=f"{stem}-{field}-list"))
            cases.append(
                pytest.param(name, path, "x" * 5000, TYPE_REASONS, id=f"{stem}-{field}-5k")
            )
            if (name, field) not in OPTIONAL:
                cases.append(
                    pytest.param(name, path, _DELETE, TYPE_REASONS, id=f"{stem}-{field}-gone")
                )
        for key in CONTAINERS[name]:
            for value in ([], "x", 7):
                kind = type(value).__name__
                cases.append(
                    pytest.param(name, [key], value, TYPE_REASONS, id=f"{stem}-{key}-{kind}")
                )
    return cases


@pytest.mark.parametrize(("name", "path", "value", "reasons"), _field_cases())
def test_hostile_field_is_refused(
    name: str, path: list[Any], value: Any, reasons: set[RejectReason]
) -> None:
    """A `..` name, a malformed digest or tag, a number, a list, an oversized string or a missing
    field, and an object replaced by another type, are refused with their reason."""
    assert refusal(name, edited(name, changed(path, value))) in reasons


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_oversize_body_is_refused(name: str) -> None:
    """A sample padded past MAX_PAYLOAD_BYTES is refused before it is parsed."""
    body = (SAMPLES / name).read_bytes()
    padded = body.rstrip()[:-1] + b" " * MAX_PAYLOAD_BYTES + b"}"
    assert refusal(name, padded) == RejectReason.TOO_LARGE


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_deeply_nested_body_is_refused(name: str) -> None:
    """A sample whose first object holds 100,000 nested arrays is not JSON to the bridge (the
    parser's recursion limit), not a crash."""
    body = (SAMPLES / name).read_bytes().rstrip()
    nested = body[:-1] + b',"deep":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert refusal(name, nested) == RejectReason.INVALID_JSON


@pytest.mark.parametrize(
    ("name", "change", "host", "reason"),
    [
        # Docker Hub's body is Docker Hub's: not for another registry's source.
        pytest.param("dockerhub-push.json", None, "registry.example.com",
                     RejectReason.SOURCE_MISMATCH, id="dockerhub-for-another-registry"),
        pytest.param("dockerhub-push.json",
                     changed(["callback_url"], "https://evil.example.com/u/prod/web/hook/1/"),
                     "docker.io", RejectReason.SOURCE_MISMATCH, id="dockerhub-callback-elsewhere"),
        # Alibaba names the region: it must be the source registry's.
        pytest.param("alibaba-push.json", None, "registry.cn-beijing.aliyuncs.com",
                     RejectReason.UNKNOWN_ACCOUNT_REGION, id="alibaba-other-region"),
        pytest.param("alibaba-push.json", changed(["repository", "region"], "cn-beijing"),
                     "crpi-x1.cn-hangzhou.cr.aliyuncs.com", RejectReason.UNKNOWN_ACCOUNT_REGION,
                     id="alibaba-enterprise-other-region"),
        # Gitea serves its registry on its web host: html_url names it.
        pytest.param("gitea-push.json", None, "gitea.other.example",
                     RejectReason.SOURCE_MISMATCH, id="gitea-other-host"),
        pytest.param("forgejo-push.json", None, "codeberg.org",
                     RejectReason.SOURCE_MISMATCH, id="forgejo-other-host"),
        # GitHub's package_url names the registry (ghcr.io).
        pytest.param("github-push.json", None, "registry.example.com",
                     RejectReason.SOURCE_MISMATCH, id="github-other-host"),
    ],
)  # fmt: skip
def test_body_for_another_registry_is_refused(
    name: str, change: Any, host: str, reason: RejectReason
) -> None:
    """A body naming another registry than the source's (a host, a region) is refused: it is
    another registry's event, misrouted or forged, and its repository names nothing here."""
    body = edited(name, change) if change else (SAMPLES / name).read_bytes()
    assert refusal(name, body, host=host) == reason


@pytest.mark.parametrize(
    ("name", "host"),
    [
        pytest.param("dockerhub-push.json", "registry-1.docker.io", id="dockerhub"),
        pytest.param("alibaba-push.json", "registry.cn-hangzhou.aliyuncs.com", id="alibaba"),
        pytest.param(
            "alibaba-push.json", "registry-vpc.cn-hangzhou.aliyuncs.com", id="alibaba-vpc"
        ),
        pytest.param("alibaba-push.json", "mirror.example.com", id="alibaba-behind-own-name"),
        pytest.param("gitea-push.json", "REGISTRY.example.com:443", id="gitea-case-and-port"),
        pytest.param("github-push.json", "ghcr.io", id="github"),
    ],
)
def test_body_for_the_sources_registry_is_published(name: str, host: str) -> None:
    """The same bodies sent for their own registry (any case, with a port; an Alibaba registry
    reached by a name of its own is not checked) are published."""
    assert len(run(name, host=host).events) == 1


def test_zot_structured_without_data_is_refused() -> None:
    """zot's structured CloudEvent whose data is missing is refused, not taken for binary mode."""
    document = json.loads((SAMPLES / "zot-cloudevents-push.json").read_text())
    del document["data"]
    body = json.dumps(document).encode()
    assert refusal("zot-cloudevents-push.json", body) in TYPE_REASONS
