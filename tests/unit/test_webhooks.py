"""Registry webhooks -> the normalised envelope: every sample, and hostile variants of each."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from replicator.domain.events import PushEvent, RejectReason, TagPush
from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES, parse_payload
from replicator.domain.events.webhooks import format_named, normalise, recognise
from replicator.errors import EventError

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "webhooks"
DIGEST = "sha256:8d60d2f4b6119da7186f160712926ef3bff38192b6bfac9d06aafb95027079c7"
OCI = "application/vnd.oci.image.manifest.v1+json"
LOCATION = ("123456789012", "us-east-1")
JSON = {"content-type": "application/json"}
# The headers each sender adds that decide the format (README of the samples).
HEADERS: dict[str, dict[str, str]] = {
    "distribution": {"content-type": "application/vnd.docker.distribution.events.v2+json"},
    "zot-push": {**JSON, "ce-type": "zotregistry.image.updated", "ce-id": "zot-1"},
    "zot-delete": {**JSON, "ce-type": "zotregistry.image.deleted", "ce-id": "zot-2"},
    "github": {**JSON, "x-github-event": "registry_package", "x-github-delivery": "gh-1"},
    "harbor-cloudevents": {"content-type": "application/cloudevents+json"},
    "distribution-gitlab": {"content-type": "application/vnd.docker.distribution.events.v1+json"},
    # Gitea and Forgejo send GitHub's header too, and their own.
    "gitea": {**JSON, "x-gitea-event": "package", "x-github-event": "package",
              "x-gitea-delivery": "gitea-1"},
    "forgejo": {**JSON, "x-forgejo-event": "package", "x-gitea-event": "package",
                "x-github-event": "package", "x-forgejo-delivery": "forgejo-1"},
    "zot-cloudevents": {"content-type": "application/cloudevents+json"},
    "github-ping": {**JSON, "x-github-event": "ping", "x-github-delivery": "gh-ping-1"},
    "gitea-test": {**JSON, "x-gitea-event": "push", "x-github-event": "push"},
    "nexus-asset": {**JSON, "x-nexus-webhook-id": "rm:repository:asset"},
    "nexus": {**JSON, "x-nexus-webhook-id": "rm:repository:component",
              "x-nexus-webhook-delivery": "nexus-1"},
    "nexus-docs-asset": {**JSON, "x-nexus-webhook-id": "rm:repository:asset",
                         "x-nexus-webhook-delivery": "7f4a6dde-5c68-4999-bcc0-a62f3fb8ae48"},
    "zot-repository": {**JSON, "ce-type": "zotregistry.repository.created", "ce-id": "zot-3"},
    "github-octokit-package": {**JSON, "x-github-event": "package", "x-github-delivery": "gh-2"},
    "github-octokit-ping": {**JSON, "x-github-event": "ping", "x-github-delivery": "gh-3"},
}  # fmt: skip
# The configured registry host of the source a sample is sent for, where the body names one.
HOSTS = {"gar": "us-docker.pkg.dev"}


def headers_of(name: str) -> dict[str, str]:
    """The headers the sender of sample `name` sends."""
    stem = name.removesuffix(".json")
    for prefix in sorted(HEADERS, key=len, reverse=True):
        if stem.startswith(prefix):
            return HEADERS[prefix]
    return JSON


def run(
    name: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    host: str | None = None,
) -> Any:
    """Normalise sample `name` (or `body` sent as it) for a source whose registry is `host`
    (by default the one HOSTS names for the sample's sender)."""
    raw = body if body is not None else (SAMPLES / name).read_bytes()
    host = host or HOSTS.get(name.partition("-")[0])
    return normalise(raw, headers or headers_of(name), source="src", location=LOCATION, host=host)


# (sample, format, [(action, repository, digest, tag, media type)])
EXPECTED = [
    ("distribution-push.json", "distribution", [("push", "prod/web", DIGEST, "v1", OCI)]),
    ("distribution-delete.json", "distribution", [("delete", "prod/web", DIGEST, None, None)]),
    ("ecr-push.json", "ecr", [("push", "prod/web", DIGEST, "v1", OCI)]),
    ("ecr-delete.json", "ecr", [("delete", "prod/web", DIGEST, "v1", None)]),
    ("harbor-push.json", "harbor", [("push", "prod/web", DIGEST, "v1", None)]),
    ("harbor-delete.json", "harbor", [("delete", "prod/web", DIGEST, None, None)]),
    ("harbor-cloudevents-push.json", "harbor-cloudevents",
     [("push", "prod/web", DIGEST, "v1", None)]),
    ("harbor-cloudevents-delete.json", "harbor-cloudevents",
     [("delete", "prod/web", DIGEST, None, None)]),
    ("quay-push.json", "quay", [("push", "prod/web", None, "v1", None)]),
    ("acr-push.json", "acr", [("push", "prod/web", DIGEST, "v1", OCI)]),
    ("acr-delete.json", "acr", [("delete", "prod/web", DIGEST, None, None)]),
    ("zot-push.json", "zot", [("push", "prod/web", DIGEST, "v1", OCI)]),
    ("zot-delete.json", "zot", [("delete", "prod/web", None, "v1", None)]),
    ("github-push.json", "github", [("push", "prod/web", DIGEST, "v1", OCI)]),
    ("artifactory-push.json", "artifactory",
     [("push", "docker-local/prod/web", None, "v1", None)]),
    ("artifactory-delete.json", "artifactory",
     [("delete", "docker-local/prod/web", None, "v1", None)]),
    ("gar-push.json", "gar", [("push", "example-project/prod/web", DIGEST, "v1", None)]),
    ("gar-delete.json", "gar", [("delete", "example-project/prod/web", None, "v1", None)]),
    ("quay-push-legacy.json", "quay", [("push", "prod/web", None, "v1", None)]),
    ("github-push-owner-capitals.json", "github", [("push", "prod/web", DIGEST, "v1", OCI)]),
    ("gitea-push.json", "gitea", [("push", "prod/web", None, "v1", None)]),
    ("gitea-delete.json", "gitea", [("delete", "prod/web", None, "v1", None)]),
    ("gitea-push-untagged.json", "gitea", [("push", "prod/web", DIGEST, None, None)]),
    ("forgejo-push.json", "gitea", [("push", "prod/web", None, "v1", None)]),
    ("dockerhub-push.json", "dockerhub", [("push", "prod/web", None, "v1", None)]),
    ("alibaba-push.json", "alibaba", [("push", "prod/web", DIGEST, "v1", None)]),
    ("nexus-push.json", "nexus", [("push", "prod/web", None, "v1", None)]),
    ("nexus-delete.json", "nexus", [("delete", "prod/web", None, "v1", None)]),
    ("zot-cloudevents-push.json", "zot", [("push", "prod/web", DIGEST, "v1", OCI)]),
    ("zot-cloudevents-delete.json", "zot", [("delete", "prod/web", None, "v1", None)]),
]  # fmt: skip

# Real deliveries that need no work: (sample, format, the reasons it is ignored for).
ACKNOWLEDGED = [
    ("distribution-gitlab-rename.json", "distribution", ["unknown_action"]),
    ("quay-build-success.json", "quay", ["quay_build"]),
    ("quay-test-notification.json", "quay", ["quay_test_notification"]),
    ("quay-vulnerability-found.json", "quay", ["quay_other_event"]),
    ("acr-ping.json", "acr", ["acr_ping"]),
    ("gar-push-other-location.json", "gar", ["gar_other_registry"]),
    ("nexus-asset.json", "nexus", ["nexus_asset"]),
    ("github-ping.json", "github", ["github_ping"]),
    ("gitea-test-push.json", "gitea", ["gitea_push"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "format_name", "reasons"), ACKNOWLEDGED, ids=lambda v: str(v)[:30]
)
def test_sample_is_acknowledged_and_ignored(
    name: str, format_name: str, reasons: list[str]
) -> None:
    """A real delivery of a known sender that names no push or delete (a rename, a build, a
    ping, a test notification, another registry's message) is recognised and ignored, with a
    reason, never refused: a sender retrying refused deliveries would hold its later pushes."""
    webhook = run(name)
    assert webhook.format == format_named(format_name)
    assert webhook.events == ()
    assert list(webhook.ignored) == reasons


@pytest.mark.parametrize(("name", "format_name", "events"), EXPECTED, ids=lambda v: str(v)[:30])
def test_sample_normalises(name: str, format_name: str, events: list[tuple[Any, ...]]) -> None:
    """Each registry's sample is recognised and yields its manifest push or delete."""
    webhook = run(name)
    assert webhook.format == format_named(format_name)
    assert [
        (e.action, e.repository, e.digest, e.tag, e.media_type) for e in webhook.events
    ] == events
    assert webhook.ignored == ()


@pytest.mark.parametrize(("name", "format_name", "events"), EXPECTED, ids=lambda v: str(v)[:30])
def test_envelope_is_what_the_daemon_reads(
    name: str, format_name: str, events: list[tuple[Any, ...]]
) -> None:
    """The published envelope parses, in the daemon, to the same events (a tag-only push as a
    TagPush the daemon resolves)."""
    webhook = run(name)
    payload = (SAMPLES / name).read_bytes() if format_name == "distribution" else webhook.envelope()
    parsed = parse_payload(payload, topic_source="src", locate=lambda *_: None, sources=["src"])
    kinds = []
    for item in parsed:
        if isinstance(item, TagPush):
            kinds.append(("push", item.repository, None, item.tag))
        else:
            kinds.append(("push" if isinstance(item, PushEvent) else "delete",
                          item.repository, item.digest, item.tag))  # fmt: skip
    assert kinds == [(a, r, d, t) for a, r, d, t, _ in events]


def test_retried_delivery_keeps_its_event_id() -> None:
    """A body without an id of its own (Quay) gets the same id each time it is delivered."""
    assert run("quay-push.json").events[0].event_id == run("quay-push.json").events[0].event_id


def test_distribution_v1_media_type_and_plain_json_are_recognised() -> None:
    """v2.8 (and GitLab) send v1, tests and proxies application/json: both are distribution."""
    body = (SAMPLES / "distribution-push.json").read_bytes()
    v1 = {"content-type": "application/vnd.docker.distribution.events.v1+json"}
    assert run("x", body, v1).format.name == "distribution"
    assert run("x", body, JSON).format.name == "distribution"


def test_github_form_encoded_payload() -> None:
    """GitHub's form content type carries the JSON in `payload=`."""
    from urllib.parse import urlencode

    body = urlencode({"payload": (SAMPLES / "github-push.json").read_text()}).encode()
    headers = {**HEADERS["github"], "content-type": "application/x-www-form-urlencoded"}
    assert run("x", body, headers).events[0].digest == DIGEST


def test_gar_with_payload_unwrapping() -> None:
    """A push subscription with payload unwrapping posts the bare message data."""
    wrapped = json.loads((SAMPLES / "gar-push.json").read_text())
    body = base64.b64decode(wrapped["message"]["data"])
    webhook = run("x", body, JSON)
    assert (webhook.format.name, webhook.events[0].digest) == ("gar", DIGEST)


def test_harbor_untagged_artifact_has_digest_in_tag() -> None:
    """Harbor writes the digest in `tag` for an untagged artifact: no tag is kept."""
    document = json.loads((SAMPLES / "harbor-push.json").read_text())
    document["event_data"]["resources"][0]["tag"] = DIGEST
    assert run("x", json.dumps(document).encode()).events[0].tag is None


def test_harbor_occur_at_becomes_the_timestamp() -> None:
    """Harbor's Unix-seconds `occur_at` is carried as RFC 3339."""
    assert run("harbor-push.json").events[0].timestamp == "2026-11-28T10:15:30Z"


# -- what needs no work -----------------------------------------------------------------------


def edited(name: str, change: Callable[[Any], None]) -> bytes:
    """Sample `name` with `change` applied to its parsed JSON."""
    document = json.loads((SAMPLES / name).read_text())
    change(document)
    return json.dumps(document).encode()


def _set(path: list[Any], value: Any) -> Callable[[Any], None]:
    def change(document: Any) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


_DELETE = object()


def _both(first: Callable[[Any], None], second: Callable[[Any], None]) -> Callable[[Any], None]:
    def change(document: Any) -> None:
        first(document)
        second(document)

    return change


@pytest.mark.parametrize(
    ("name", "change", "headers"),
    [
        pytest.param("harbor-push.json", _set(["type"], "SCANNING_COMPLETED"), None,
                     id="harbor-scan"),
        pytest.param("harbor-cloudevents-push.json", _set(["type"], "harbor.artifact.pulled"), None,
                     id="harbor-ce-pull"),
        pytest.param("acr-push.json", _set(["action"], "chart_push"), None, id="acr-chart"),
        pytest.param("acr-push.json", _set(["target", "mediaType"],
                     "application/vnd.oci.image.layer.v1.tar+gzip"), None, id="acr-blob"),
        pytest.param("zot-push.json", None, {**JSON, "ce-type": "zotregistry.repository.created"},
                     id="zot-repository-created"),
        pytest.param("zot-push.json", None, {**JSON, "ce-type": "zotregistry.image.lint_failed"},
                     id="zot-lint"),
        pytest.param("github-push.json", None, {**JSON, "x-github-event": "ping"},
                     id="github-ping"),
        pytest.param("github-push.json", _both(_set(["registry_package", "package_type"], "npm"),
                                              _set(["registry_package", "ecosystem"], "npm")),
                     None, id="github-npm"),
        pytest.param("artifactory-push.json", _set(["event_type"], "promoted"), None,
                     id="artifactory-promoted"),
        pytest.param("ecr-push.json", _set(["detail", "result"], "FAILURE"), None, id="ecr-failed"),
        pytest.param("ecr-push.json", _set(["detail-type"], "ECR Image Scan"), None, id="ecr-scan"),
        pytest.param("quay-push.json", _set(["updated_tags"], []), None, id="quay-no-tags"),
    ],
)  # fmt: skip
def test_other_events_are_ignored(
    name: str, change: Callable[[Any], None] | None, headers: dict[str, str] | None
) -> None:
    """Scans, pings, charts, blob pushes... are understood and kept out of the bus."""
    body = edited(name, change) if change else (SAMPLES / name).read_bytes()
    webhook = run(name, body, headers or headers_of(name))
    assert webhook.events == ()
    assert webhook.ignored


# -- hostile variants -------------------------------------------------------------------------

# Where each sample keeps repository, digest and tag (GAR keeps them in base64 message data).
FIELDS: dict[str, dict[str, list[Any]]] = {
    "distribution-push.json": {"repository": ["events", 0, "target", "repository"],
                               "digest": ["events", 0, "target", "digest"],
                               "tag": ["events", 0, "target", "tag"]},
    "ecr-push.json": {"repository": ["detail", "repository-name"],
                      "digest": ["detail", "image-digest"], "tag": ["detail", "image-tag"]},
    "harbor-push.json": {"repository": ["event_data", "repository", "repo_full_name"],
                         "digest": ["event_data", "resources", 0, "digest"],
                         "tag": ["event_data", "resources", 0, "tag"]},
    "harbor-cloudevents-push.json": {"repository": ["data", "repository", "repo_full_name"],
                                     "digest": ["data", "resources", 0, "digest"],
                                     "tag": ["data", "resources", 0, "tag"]},
    "quay-push.json": {"repository": ["repository"], "tag": ["updated_tags", 0]},
    "acr-push.json": {"repository": ["target", "repository"], "digest": ["target", "digest"],
                      "tag": ["target", "tag"]},
    "zot-push.json": {"repository": ["name"], "digest": ["digest"], "tag": ["reference"]},
    "github-push.json": {"repository": ["registry_package", "package_version", "package_url"],
                         "tag": ["registry_package", "package_version", "container_metadata",
                                 "tag", "name"]},
    "artifactory-push.json": {"repository": ["data", "image_name"], "tag": ["data", "tag"]},
}  # fmt: skip
BAD_VALUES = {
    "repository": ("prod/../../etc", RejectReason.INVALID_REPOSITORY),
    "digest": ("sha256:not-hex", RejectReason.INVALID_DIGEST),
    "tag": ("v1/../../x", RejectReason.INVALID_TAG),
}


def _hostile_cases() -> list[Any]:
    cases = []
    for name, fields in FIELDS.items():
        for field, path in fields.items():
            value, reason = BAD_VALUES[field]
            if name == "github-push.json" and field == "repository":
                value = "ghcr.io/prod/../../etc:v1"
            cases.append(pytest.param(name, path, value, reason, id=f"{name[:-5]}-bad-{field}"))
            cases.append(pytest.param(name, path, 42, None, id=f"{name[:-5]}-{field}-number"))
        first = next(iter(fields.values()))
        cases.append(pytest.param(name, first, _DELETE, None, id=f"{name[:-5]}-missing"))
    return cases


@pytest.mark.parametrize(("name", "path", "value", "reason"), _hostile_cases())
def test_hostile_field_is_refused(
    name: str, path: list[Any], value: Any, reason: RejectReason | None
) -> None:
    """A `..` name, a malformed digest or tag, a number or a missing field is refused with
    its reason (missing or wrongly typed fields: missing_field or the field's own reason)."""
    with pytest.raises(EventError) as caught:
        run(name, edited(name, _set(path, value)))
    if reason is not None:
        assert caught.value.reason == reason
    else:
        assert caught.value.reason in {
            RejectReason.MISSING_FIELD, RejectReason.INVALID_TAG, RejectReason.UNSUPPORTED_EVENT,
            RejectReason.UNKNOWN_FORMAT,  # Quay without `repository` is no known shape at all
        }  # fmt: skip


def _gar(data: dict[str, Any]) -> bytes:
    wrapped = json.loads((SAMPLES / "gar-push.json").read_text())
    wrapped["message"]["data"] = base64.b64encode(json.dumps(data).encode()).decode()
    return json.dumps(wrapped).encode()


GAR_IMAGE = "us-docker.pkg.dev/example-project/prod/web"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(_gar({"action": "INSERT", "digest": f"{GAR_IMAGE}/../x@{DIGEST}"}),
                     RejectReason.INVALID_REPOSITORY, id="dotdot"),
        pytest.param(_gar({"action": "INSERT", "digest": f"{GAR_IMAGE}@sha256:1"}),
                     RejectReason.INVALID_DIGEST, id="bad-digest"),
        pytest.param(_gar({"action": "INSERT", "digest": f"{GAR_IMAGE}@{DIGEST}",
                           "tag": "us-docker.pkg.dev/other/img:v1"}),
                     RejectReason.INVALID_REPOSITORY, id="digest-and-tag-disagree"),
        pytest.param(_gar({"action": "INSERT"}), RejectReason.MISSING_FIELD, id="no-reference"),
        pytest.param(_gar({"action": "INSERT", "digest": 7}), RejectReason.MISSING_FIELD,
                     id="digest-number"),
        pytest.param(_gar({"action": "INSERT", "digest": DIGEST}), RejectReason.INVALID_REPOSITORY,
                     id="no-host"),
        pytest.param(edited("gar-push.json", _set(["message", "data"], "%%%not base64")),
                     RejectReason.INVALID_JSON, id="data-not-base64"),
        pytest.param(edited("gar-push.json", _set(["message", "data"], "WzFd")),
                     RejectReason.INVALID_JSON, id="data-not-object"),
    ],
)  # fmt: skip
def test_hostile_gar_data(body: bytes, reason: RejectReason) -> None:
    """GAR's base64 message data is checked like any other body."""
    with pytest.raises(EventError) as caught:
        run("gar-push.json", body)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "name", sorted(p.name for p in SAMPLES.glob("*.json") if p.stat().st_size > 0)
)
def test_truncated_body_is_refused(name: str) -> None:
    """Every sample cut in half is not JSON."""
    body = (SAMPLES / name).read_bytes()
    with pytest.raises(EventError) as caught:
        run(name, body[: len(body) // 2])
    assert caught.value.reason == RejectReason.INVALID_JSON


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b" " * (MAX_PAYLOAD_BYTES + 1), RejectReason.TOO_LARGE, id="huge"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, RejectReason.INVALID_JSON, id="deep"),
        pytest.param(b"\xff\xfe{}", RejectReason.INVALID_JSON, id="not-utf8"),
        pytest.param(b"[]", RejectReason.UNKNOWN_FORMAT, id="array"),
        pytest.param(b'{"hello": "world"}', RejectReason.UNKNOWN_FORMAT, id="unknown-object"),
        pytest.param(b"null", RejectReason.UNKNOWN_FORMAT, id="null"),
    ],
)
def test_unusable_bodies(body: bytes, reason: RejectReason) -> None:
    """Huge, deeply nested, undecodable or unknown bodies are refused with their reason."""
    with pytest.raises(EventError) as caught:
        run("x", body, JSON)
    assert caught.value.reason == reason


def test_quay_with_too_many_tags_is_refused() -> None:
    """A body naming more than a thousand manifests is refused, not fanned out."""
    body = edited("quay-push.json", _set(["updated_tags"], [f"t{i}" for i in range(1001)]))
    with pytest.raises(EventError) as caught:
        run("quay-push.json", body)
    assert caught.value.reason == RejectReason.TOO_LARGE


def test_ecr_event_of_another_account_is_refused() -> None:
    """An EventBridge event posted for a source must be of that source's account and region."""
    body = edited("ecr-push.json", _set(["account"], "999999999999"))
    with pytest.raises(EventError) as caught:
        run("ecr-push.json", body)
    assert caught.value.reason == RejectReason.UNKNOWN_ACCOUNT_REGION


def test_pinned_format_overrides_recognition() -> None:
    """A source pinned to quay reads a Harbor body as Quay's (and refuses it)."""
    body = (SAMPLES / "harbor-push.json").read_bytes()
    with pytest.raises(EventError):
        normalise(body, JSON, source="s", location=LOCATION, pinned=format_named("quay"))


def test_recognise_without_hints_is_none() -> None:
    """A JSON object of no known shape is not guessed at."""
    assert recognise({}, {"action": "push"}) is None
    assert recognise({}, copy.deepcopy([1])) is None


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        pytest.param({"repository": "prod/web"}, RejectReason.MISSING_FIELD, id="no-digest-no-tag"),
        pytest.param({"repository": "prod/../x", "tag": "v1"}, RejectReason.INVALID_REPOSITORY,
                     id="dotdot"),
        pytest.param({"repository": "prod/web", "tag": "v1", "mediaType": 3},
                     RejectReason.MISSING_FIELD, id="media-type-number"),
    ],
)  # fmt: skip
def test_daemon_refuses_hostile_bridged_events(
    target: dict[str, Any], reason: RejectReason
) -> None:
    """An envelope marked as bridged is still checked by the daemon's parser."""
    event = {"id": "e1", "action": "push", "format": "quay", "target": target}
    payload = json.dumps({"events": [event]}).encode()
    with pytest.raises(EventError) as caught:
        parse_payload(payload, topic_source="src", locate=lambda *_: None, sources=["src"])
    assert caught.value.reason == reason


@pytest.mark.parametrize("name", ["distribution-push.json", "distribution-delete.json"])
def test_bridge_keeps_the_senders_user_agent(name: str) -> None:
    """The bridged envelope carries the sender's request.useragent to the daemon's parser, which
    tells a replica's echo by it (domain/events/echoes.py)."""
    sent = json.loads((SAMPLES / name).read_bytes())["events"][0]["request"]["useragent"]
    parsed = parse_payload(
        run(name).envelope(), topic_source="src", locate=lambda *_: None, sources=["src"]
    )
    assert [event.agent for event in parsed] == [sent]
