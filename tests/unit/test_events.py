"""Parsing bus payloads: the distribution envelope and EventBridge ECR events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.domain.events import DeleteEvent, Ignored, IgnoreReason, PushEvent, RejectReason
from replicator.domain.events.distribution import MAX_AGENT_CHARS
from replicator.domain.events.ecr import ReplicationResult, replication_result_event
from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES, parse_payload
from replicator.errors import EventError

CORPUS = Path(__file__).resolve().parents[1] / "data" / "events"
SOURCES = ("use1", "usw2")
ACCOUNTS = {("111122223333", "us-east-1"): "use1", ("111122223333", "us-west-2"): "usw2"}
MANIFEST_DIGEST = "sha256:19b39d967384fcbf2d3ec43e4b4494d0c9cf65794af477f8312fb33c2dc0070d"
INDEX_DIGEST = "sha256:90a6be8c7a864782bfa54ce1fbda4bd31da407c3dbf9d112b8b586c1416487c1"
CHILD_DIGESTS = (
    "sha256:1b312e59ca5f4fcc028837be4f922fb40d16bc25e84a224880452a5fb57d6414",
    "sha256:5c3d06b570a6ed3e555d5a6d775ab78cfe867ba03b391355ca48b5518b5efc58",
)
ECR_DIGEST = "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234abcd"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def locate(account: str, region: str) -> str | None:
    return ACCOUNTS.get((account, region))


def parse(name: str, topic_source: str | None = "use1") -> list[Any]:
    payload = (CORPUS / name).read_bytes()
    return parse_payload(payload, topic_source=topic_source, locate=locate, sources=SOURCES)


def shape(item: Any) -> tuple[Any, ...]:
    """A comparable summary of a parsed event (ids and timestamps left out)."""
    if isinstance(item, PushEvent):
        return ("push", item.source, item.repository, item.digest, item.tag, item.media_type)
    if isinstance(item, DeleteEvent):
        return ("delete", item.source, item.repository, item.digest, item.tag)
    assert isinstance(item, Ignored)
    return ("ignored", item.reason)


ACCEPTED = [
    pytest.param(
        "distribution-manifest.json",
        [("push", "use1", "corpus/r001", MANIFEST_DIGEST, "v1", OCI_MANIFEST)],
        id="tagged-manifest-push",
    ),
    pytest.param(
        "distribution-index.json",
        [("push", "use1", "corpus/r000", INDEX_DIGEST, "v1", OCI_INDEX)],
        id="index-push",
    ),
    pytest.param(
        "distribution-untagged-child.json",
        [("push", "use1", "corpus/r000", CHILD_DIGESTS[0], None, OCI_MANIFEST)],
        id="untagged-child-push",
    ),
    pytest.param(
        "distribution-docker-v2.json",
        [
            (
                "push",
                "use1",
                "corpus/r001",
                MANIFEST_DIGEST,
                "v1",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
        ],
        id="docker-v2-push",
    ),
    pytest.param("distribution-blob.json", [("ignored", IgnoreReason.BLOB_PUSH)], id="blob-push"),
    pytest.param("distribution-mount.json", [("ignored", IgnoreReason.BLOB_MOUNT)], id="mount"),
    pytest.param("distribution-pull.json", [("ignored", IgnoreReason.PULL)], id="pull"),
    pytest.param(
        "distribution-unknown-action.json",
        [("ignored", IgnoreReason.UNKNOWN_ACTION)],
        id="unknown-action-acknowledged",
    ),
    pytest.param(
        "distribution-schema1.json",
        [("ignored", IgnoreReason.UNSUPPORTED_MEDIA_TYPE)],
        id="schema1-push",
    ),
    pytest.param(
        "distribution-batch.json",
        [
            ("ignored", IgnoreReason.BLOB_PUSH),
            ("push", "use1", "corpus/r001", MANIFEST_DIGEST, "v1", OCI_MANIFEST),
            ("ignored", IgnoreReason.PULL),
        ],
        id="batch",
    ),
    pytest.param("distribution-empty.json", [], id="empty-envelope"),
    pytest.param(
        "distribution-delete-digest.json",
        [("delete", "use1", "corpus/r001", MANIFEST_DIGEST, None)],
        id="delete-by-digest",
    ),
    pytest.param(
        "distribution-delete-tag.json",
        [("delete", "use1", "corpus/r001", None, "v1")],
        id="delete-tag",
    ),
    pytest.param(
        "distribution-delete-repository.json",
        [("ignored", IgnoreReason.REPOSITORY_DELETE)],
        id="delete-repository",
    ),
    pytest.param(
        "ecr-push.json",
        [("push", "use1", "prod/api", ECR_DIGEST, "v1.4.2", None)],
        id="ecr-push",
    ),
    pytest.param(
        "ecr-push-untagged.json",
        [("push", "use1", "prod/api", ECR_DIGEST, None, None)],
        id="ecr-push-untagged",
    ),
    pytest.param(
        "ecr-push-media-type.json",
        [("push", "use1", "prod/api", ECR_DIGEST, "v1.4.2", OCI_INDEX)],
        id="ecr-push-with-media-type",
    ),
    pytest.param(
        "ecr-delete.json",
        [("delete", "use1", "prod/api", ECR_DIGEST, "v1.4.2")],
        id="ecr-delete",
    ),
    pytest.param(
        "ecr-push-failed.json", [("ignored", IgnoreReason.NOT_SUCCESSFUL)], id="ecr-failed"
    ),
    pytest.param(
        "ecr-replication.json",
        [("ignored", IgnoreReason.REPLICATION_EVENT)],
        id="ecr-replication-looped-back",
    ),
]

REJECTED = [
    pytest.param("not-json.txt", RejectReason.INVALID_JSON, id="not-json"),
    pytest.param("latin1.bin", RejectReason.INVALID_JSON, id="not-utf8"),
    pytest.param("array.json", RejectReason.UNSUPPORTED_EVENT, id="json-array"),
    pytest.param("unknown-shape.json", RejectReason.UNSUPPORTED_EVENT, id="unknown-shape"),
    pytest.param(
        "distribution-events-not-list.json", RejectReason.UNSUPPORTED_EVENT, id="events-not-list"
    ),
    pytest.param(
        "distribution-invalid-repository.json",
        RejectReason.INVALID_REPOSITORY,
        id="invalid-repository",
    ),
    pytest.param(
        "distribution-invalid-digest.json", RejectReason.INVALID_DIGEST, id="invalid-digest"
    ),
    pytest.param(
        "distribution-invalid-child-digest.json",
        RejectReason.INVALID_DIGEST,
        id="invalid-child-digest",
    ),
    pytest.param("distribution-invalid-tag.json", RejectReason.INVALID_TAG, id="invalid-tag"),
    pytest.param(
        "distribution-missing-target.json", RejectReason.MISSING_FIELD, id="missing-target"
    ),
    pytest.param(
        "distribution-missing-digest.json", RejectReason.MISSING_FIELD, id="missing-digest"
    ),
    pytest.param("ecr-scan.json", RejectReason.UNSUPPORTED_EVENT, id="ecr-other-detail-type"),
    pytest.param("ecr-other-action.json", RejectReason.UNSUPPORTED_EVENT, id="ecr-other-action"),
    pytest.param("ecr-no-account.json", RejectReason.MISSING_FIELD, id="ecr-no-account"),
    pytest.param(
        "ecr-other-account.json", RejectReason.UNKNOWN_ACCOUNT_REGION, id="ecr-unknown-account"
    ),
    pytest.param("ecr-push-no-digest.json", RejectReason.MISSING_FIELD, id="ecr-push-no-digest"),
    pytest.param(
        "ecr-push-invalid-repository.json",
        RejectReason.INVALID_REPOSITORY,
        id="ecr-invalid-repository",
    ),
    pytest.param(
        "ecr-delete-neither.json", RejectReason.MISSING_FIELD, id="ecr-delete-no-digest-no-tag"
    ),
]


class TestParsePayload:
    @pytest.mark.parametrize(("name", "expected"), ACCEPTED)
    def test_accepted_payload(self, name: str, expected: list[tuple[Any, ...]]) -> None:
        """Each accepted corpus payload parses into the expected events, in envelope order."""
        assert [shape(item) for item in parse(name)] == expected

    @pytest.mark.parametrize(("name", "reason"), REJECTED)
    def test_rejected_payload(self, name: str, reason: RejectReason) -> None:
        """Each rejected corpus payload raises EventError with its stable reason."""
        with pytest.raises(EventError) as caught:
            parse(name)
        assert caught.value.reason == reason

    def test_index_push_keeps_child_manifests(self) -> None:
        """An index push lists its child manifest digests; an image push lists none."""
        (index,) = parse("distribution-index.json")
        (image,) = parse("distribution-manifest.json")
        assert index.references == CHILD_DIGESTS
        assert image.references == ()

    def test_ids_and_timestamps_are_kept(self) -> None:
        """The event id and the push time (nanoseconds, UTC) reach the PushEvent."""
        (event,) = parse("distribution-manifest.json")
        assert event.event_id == "fccb3770-1813-4a5c-8403-b423196a76b6"
        assert event.pushed_at == pytest.approx(1795877840.868438438)

    def test_user_agent_is_kept(self) -> None:
        """The sender's request.useragent reaches the PushEvent (an echo is told by it)."""
        (event,) = parse("distribution-manifest.json")
        assert event.agent == "skopeo/1.9.3"

    @pytest.mark.parametrize("request_field", [None, "text", {"useragent": 7}, {"useragent": ""}])
    def test_odd_request_means_no_user_agent(self, request_field: object) -> None:
        """A missing, odd or empty request.useragent is no user agent, never a rejection."""
        document = json.loads((CORPUS / "distribution-manifest.json").read_bytes())
        document["events"][0]["request"] = request_field
        payload = json.dumps(document).encode()
        (event,) = parse_payload(payload, topic_source="use1", locate=locate, sources=SOURCES)
        assert event.agent is None

    def test_long_user_agent_is_cut(self) -> None:
        """A hostile user agent of any size is kept to MAX_AGENT_CHARS."""
        document = json.loads((CORPUS / "distribution-manifest.json").read_bytes())
        document["events"][0]["request"]["useragent"] = "x" * 100_000
        payload = json.dumps(document).encode()
        (event,) = parse_payload(payload, topic_source="use1", locate=locate, sources=SOURCES)
        assert event.agent == "x" * MAX_AGENT_CHARS

    def test_bad_timestamp_is_not_fatal(self) -> None:
        """An unparseable timestamp leaves pushed_at empty rather than rejecting the event."""
        (event,) = parse("distribution-bad-timestamp.json")
        assert isinstance(event, PushEvent)
        assert event.pushed_at is None

    @pytest.mark.parametrize(
        "topic_source",
        [pytest.param(None, id="no-topic-source"), pytest.param("nowhere", id="not-configured")],
    )
    def test_envelope_needs_a_configured_source(self, topic_source: str | None) -> None:
        """An envelope from no topic source, or from an unconfigured one, is unknown_source."""
        with pytest.raises(EventError) as caught:
            parse("distribution-manifest.json", topic_source=topic_source)
        assert caught.value.reason == RejectReason.UNKNOWN_SOURCE

    def test_eventbridge_source_is_its_topic(self) -> None:
        """An ECR event whose account and region name the registry of its topic is that
        registry's event."""
        payload = json.loads((CORPUS / "ecr-push.json").read_bytes())
        payload["region"] = "us-west-2"
        (event,) = parse_payload(
            json.dumps(payload).encode(), topic_source="usw2", locate=locate, sources=SOURCES
        )
        assert event.source == "usw2"

    @pytest.mark.parametrize("action", ["PUSH", "DELETE"])
    def test_eventbridge_naming_another_source_is_rejected(self, action: str) -> None:
        """An ECR event on use1's topic naming usw2's account and region is source_mismatch:
        a publisher allowed on one source's topic cannot speak for another."""
        payload = json.loads((CORPUS / "ecr-push.json").read_bytes())
        payload["region"] = "us-west-2"
        payload["detail"]["action-type"] = action
        with pytest.raises(EventError) as caught:
            parse_payload(
                json.dumps(payload).encode(), topic_source="use1", locate=locate, sources=SOURCES
            )
        assert caught.value.reason == RejectReason.SOURCE_MISMATCH
        assert "usw2" in str(caught.value)
        assert "use1" in str(caught.value)

    @pytest.mark.parametrize(
        "topic_source",
        [pytest.param(None, id="no-topic-source"), pytest.param("nowhere", id="not-configured")],
    )
    def test_eventbridge_needs_a_configured_topic_source(self, topic_source: str | None) -> None:
        """An ECR event from no topic source, or an unconfigured one, is unknown_source, as an
        envelope is."""
        with pytest.raises(EventError) as caught:
            parse("ecr-push.json", topic_source=topic_source)
        assert caught.value.reason == RejectReason.UNKNOWN_SOURCE

    def test_ten_megabytes_is_too_large(self) -> None:
        """A payload over MAX_PAYLOAD_BYTES is rejected as too_large before being parsed."""
        payload = b'{"events": [' + b" " * (10 * 1024 * 1024) + b"]}"
        with pytest.raises(EventError) as caught:
            parse_payload(payload, topic_source="use1", locate=locate)
        assert caught.value.reason == RejectReason.TOO_LARGE

    def test_limit_itself_is_accepted(self) -> None:
        """A payload of exactly MAX_PAYLOAD_BYTES is still parsed."""
        prefix, suffix = b'{"events": [', b"]}"
        payload = prefix + b" " * (MAX_PAYLOAD_BYTES - len(prefix) - len(suffix)) + suffix
        assert parse_payload(payload, topic_source="use1", locate=locate) == []

    def test_deep_nesting_is_invalid_json(self) -> None:
        """JSON nested deeper than the parser's recursion limit is invalid_json, not a crash."""
        payload = b"[" * 200_000 + b"]" * 200_000
        with pytest.raises(EventError) as caught:
            parse_payload(payload, topic_source="use1", locate=locate)
        assert caught.value.reason == RejectReason.INVALID_JSON


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
# Plausible values per field (valid and invalid), mixed with arbitrary JSON, so that generated
# documents reach the parser's deep branches and not only its first type check.
PLAUSIBLE: dict[str, list[Any]] = {
    "action": ["push", "delete", "pull", "mount", "rename"],
    "id": ["e1", ""],
    "timestamp": ["2026-11-28T14:57:20Z", "yesterday"],
    "mediaType": [OCI_MANIFEST, OCI_INDEX, "application/octet-stream"],
    "repository": ["corpus/r001", "Bad//Name"],
    "digest": [MANIFEST_DIGEST, "sha256:short"],
    "tag": ["v1", "-v1", ""],
    "size": [1, -1],
    "result": ["SUCCESS", "FAILURE"],
    "action-type": ["PUSH", "DELETE", "SCAN"],
    "repository-name": ["prod/api", "Prod API"],
    "image-digest": [ECR_DIGEST, "md5:0"],
    "image-tag": ["v1.4.2", "..", ""],
    "manifest-media-type": [OCI_INDEX, "text/plain"],
    "account": ["111122223333", "999999999999"],
    "region": ["us-east-1", "us-west-2", "mars-1"],
    "time": ["2026-11-16T01:54:34Z"],
}


def fields(*names: str, **nested: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects holding all of `names` and `nested` with plausible values, or any subset."""
    plausible = {name: st.sampled_from(PLAUSIBLE[name]) for name in names}
    complete = {**plausible, **nested}
    optional = {key: strategy | JSON_VALUES for key, strategy in complete.items()}
    return st.fixed_dictionaries(complete) | st.fixed_dictionaries({}, optional=optional)


DESCRIPTOR = fields("digest", "mediaType", "size")
TARGET = fields(
    "mediaType", "repository", "digest", "tag", references=st.lists(DESCRIPTOR, max_size=3)
)
DISTRIBUTION_EVENT = fields("action", "id", "timestamp", target=TARGET)
ENVELOPE = st.fixed_dictionaries({"events": st.lists(DISTRIBUTION_EVENT, max_size=3) | JSON_VALUES})
DETAIL = fields(
    "result",
    "action-type",
    "repository-name",
    "image-digest",
    "image-tag",
    "manifest-media-type",
)
ECR_EVENT = fields("id", "account", "region", "time", detail=DETAIL).map(
    lambda event: {"detail-type": "ECR Image Action", **event}
)


def outcome(payload: bytes) -> list[Any] | EventError:
    """The parse result, or the EventError it raised; any other exception propagates."""
    try:
        return parse_payload(payload, topic_source="use1", locate=locate, sources=SOURCES)
    except EventError as exc:
        return exc


class TestParseFuzz:
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=512))
    def test_arbitrary_bytes(self, payload: bytes) -> None:
        """Arbitrary bytes give a list of events or an EventError, never another exception."""
        result = outcome(payload)
        if isinstance(result, EventError):
            assert result.reason in set(RejectReason)
        else:
            assert isinstance(result, list)

    @settings(max_examples=500, deadline=None)
    @given(ENVELOPE | ECR_EVENT | JSON_VALUES)
    def test_arbitrary_json(self, document: Any) -> None:
        """Arbitrary JSON, event-shaped or not, gives events or an EventError, nothing else."""
        payload = json.dumps(document).encode()
        result = outcome(payload)
        if isinstance(result, EventError):
            assert result.reason in set(RejectReason)
        else:
            assert all(isinstance(item, PushEvent | DeleteEvent | Ignored) for item in result)


class TestReplicationResultEvent:
    def test_success_has_the_ecr_shape(self) -> None:
        """A successful job becomes an ECR Replication Action event from the destination."""
        event = replication_result_event(
            event_id="e1",
            time="2026-11-16T01:54:36Z",
            repository="prod/api",
            digest=ECR_DIGEST,
            tag="v1.4.2",
            source_account="111122223333",
            source_region="us-east-1",
            destination_account="111122223333",
            destination_region="us-west-2",
            result=ReplicationResult.SUCCESS,
        )
        sample = json.loads((CORPUS / "ecr-replication.json").read_bytes())
        assert {k: v for k, v in event.items() if k != "id"} == {
            **{k: v for k, v in sample.items() if k not in ("id", "detail")},
            "detail": {
                **sample["detail"],
                "destination-account": "111122223333",
                "destination-region": "us-west-2",
            },
        }

    def test_failure_carries_code_and_reason(self) -> None:
        """A failed job carries failure-code and failure-reason; an untagged one no image-tag."""
        event = replication_result_event(
            event_id="e2",
            time="2026-11-16T01:54:36Z",
            repository="prod/api",
            digest=ECR_DIGEST,
            tag=None,
            source_account="111122223333",
            source_region="us-east-1",
            destination_account="444455556666",
            destination_region="eu-west-1",
            result=ReplicationResult.FAILED,
            failure_code="POLICY_DENIED",
            failure_reason="no Allow for ecr:ReplicateImage",
        )
        assert event["detail"]["result"] == "FAILED"
        assert event["detail"]["failure-code"] == "POLICY_DENIED"
        assert event["detail"]["failure-reason"] == "no Allow for ecr:ReplicateImage"
        assert "image-tag" not in event["detail"]
        assert event["account"] == "444455556666"
        json.dumps(event)
