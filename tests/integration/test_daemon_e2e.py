"""The daemon end to end: skopeo pushes -> docker-registry webhooks -> bridge -> mosquitto ->
`replicator run` -> destination registries, checked with skopeo and the daemon's own reports."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES
from replicator.domain.jobs import JobState
from replicator.journal import EventOutcome
from tests.support import skopeo
from tests.support.daemon import (
    DESTINATIONS,
    EUW1,
    OTHER_ACCOUNT,
    REGIONS,
    SOURCE_ACCOUNT,
    USE1,
    USW2,
    JournalReader,
    Stack,
    cli_json,
    envelope,
    manifest_present,
    metric_value,
    publish,
    wait_for,
)
from tests.support.fuzz_targets import FLOOD_JOURNAL_BYTES, journal_bytes, pull_flood
from tests.support.images import BuiltImage, LayerSpec, OCILayout
from tests.support.layout_push import LayoutPusher
from tests.support.scenarios import record_figures
from tests.support.stack_fixtures import StackFactory

pytestmark = pytest.mark.integration

KIB = 1024
# A push travels webhook -> bridge -> broker -> daemon -> copy in well under a second; the
# untagged children of an index wait out the 2 s grace; 30 s covers a loaded CI machine.
REPLICATED_WITHIN_SECONDS = 30.0
# Over the payload cap but under the MQTT Maximum Packet Size, so the broker delivers it and
# the daemon refuses it (a larger message is dropped by the broker: test_bus_bounds.py).
OVER_THE_CAP = MAX_PAYLOAD_BYTES + 1024


@dataclass(frozen=True)
class Pushed:
    """What the module pushed to use1: prod/ and dev/ images and indexes, one untagged."""

    image: BuiltImage
    index: BuiltImage
    denied: BuiltImage
    denied_index: BuiltImage
    denied_untagged: BuiltImage


@pytest.fixture(scope="module")
def stack(module_stack_factory: StackFactory) -> Stack:
    """Three registries, a broker, the bridge and the daemon, shared by this module's tests."""
    return module_stack_factory("e2e")


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> OCILayout:
    """The images of this module, in one OCI layout."""
    return OCILayout(tmp_path_factory.mktemp("e2e-layout"))


@pytest.fixture(scope="module")
def pushed(stack: Stack, layout: OCILayout) -> Pushed:
    """prod/app:v1 (an image), prod/multi:v1 (a two-platform index), dev/app:v1, dev/multi:v1
    pushed to use1 with skopeo, an untagged image pushed to dev/untagged by digest, and every
    resulting job finished."""
    image = layout.image("v1", [LayerSpec(1, 8 * KIB), LayerSpec(2, 16 * KIB)], label="app")
    index = layout.multi_platform("multi", [LayerSpec(3, 8 * KIB), LayerSpec(4, 8 * KIB)])
    denied = layout.image("dev", [LayerSpec(5, 8 * KIB)], label="dev")
    denied_index = layout.multi_platform("devmulti", [LayerSpec(6, 8 * KIB)])
    untagged = layout.image(None, [LayerSpec(7, 8 * KIB)], label="untagged")
    host = stack.source.host
    skopeo.push_layout(layout.path, "v1", f"{host}/prod/app:v1")
    skopeo.push_layout(layout.path, "multi", f"{host}/prod/multi:v1")
    skopeo.push_layout(layout.path, "dev", f"{host}/dev/app:v1")
    skopeo.push_layout(layout.path, "devmulti", f"{host}/dev/multi:v1")
    pusher = LayoutPusher(layout.path, stack.source.url, "dev/untagged")
    try:
        pusher.push_manifest(untagged.digest, untagged.media_type)
    finally:
        pusher.close()
    # Five images to two destinations each; the dev/ ones are denied at euw1.
    JournalReader(stack.settings.journal_url).wait_finished(10, timeout=REPLICATED_WITHIN_SECONDS)
    return Pushed(image, index, denied, denied_index, untagged)


def wait_for_metrics(stack: Stack, ready: Callable[[str], bool], timeout: float = 10.0) -> str:
    """The exposition once `ready` holds of it (the journal's gauges refresh on a timer)."""
    deadline = time.monotonic() + timeout
    text = stack.daemon.metrics()
    while not ready(text) and time.monotonic() < deadline:
        time.sleep(0.1)
        text = stack.daemon.metrics()
    return text


def journal(stack: Stack) -> JournalReader:
    """A reader of the stack's journal."""
    return JournalReader(stack.settings.journal_url)


class TestReplication:
    """Allowed images arrive byte for byte; the denied one is reported and absent."""

    @pytest.mark.parametrize("destination", [USW2, EUW1])
    @pytest.mark.parametrize("repository", ["prod/app", "prod/multi"])
    def test_allowed_images_arrive_with_identical_digests(
        self, stack: Stack, pushed: Pushed, repository: str, destination: str
    ) -> None:
        """Each allowed image (an index with its children) has the source's digests at both
        destinations, read back with skopeo inspect --raw."""
        built = pushed.image if repository == "prod/app" else pushed.index
        source = stack.source.host
        target = stack.registries[destination].host
        assert skopeo.digest_of(f"{target}/{repository}:v1") == built.digest
        assert skopeo.digest_of(f"{source}/{repository}:v1") == built.digest
        for digest in built.manifest_digests:
            raw = skopeo.inspect_raw(f"{target}/{repository}@{digest}")
            assert raw == skopeo.inspect_raw(f"{source}/{repository}@{digest}")

    def test_denied_image_fails_with_policy_denied_in_status(
        self, stack: Stack, pushed: Pushed
    ) -> None:
        """`replicator status --json` and /v1/replication-status show dev/app FAILED
        POLICY_DENIED at euw1 (with the reason) and COMPLETE at usw2."""
        document = cli_json(
            stack.config,
            "status",
            "--repository",
            "dev/app",
            "--image-digest",
            pushed.denied.digest,
        )
        api = stack.daemon.get(
            "/v1/replication-status", repository="dev/app", imageDigest=pushed.denied.digest
        )
        assert api.status_code == 200
        for answer in (document, api.json()):
            by_name = {s["registryName"]: s for s in answer["replicationStatuses"]}
            assert by_name[USW2]["status"] == "COMPLETE"
            assert by_name[EUW1]["status"] == "FAILED"
            assert by_name[EUW1]["failureCode"] == "POLICY_DENIED"
            assert by_name[EUW1]["registryId"] == OTHER_ACCOUNT
            assert "ecr:ReplicateImage" in by_name[EUW1]["failureReason"]

    def test_denied_image_leaves_nothing_at_the_destination(
        self, stack: Stack, pushed: Pushed
    ) -> None:
        """euw1 has no dev/app repository (tags/list 404) and none of its blobs; usw2 has it."""
        euw1, usw2 = stack.registries[EUW1], stack.registries[USW2]
        assert httpx.get(f"{euw1.url}/v2/dev/app/tags/list").status_code == 404
        assert "dev/app" not in euw1.repositories()
        assert not any(euw1.has_blob(digest) for digest in pushed.denied.layer_digests)
        assert skopeo.list_tags(f"{usw2.host}/dev/app") == ["v1"]
        assert [name for name in euw1.repositories() if name.startswith("dev/")] == []
        assert sorted(name for name in usw2.repositories() if name.startswith("dev/")) == [
            "dev/app", "dev/multi", "dev/untagged"
        ]  # fmt: skip

    def test_untagged_denied_image_fails_at_run_time(self, stack: Stack, pushed: Pushed) -> None:
        """An untagged image pushed by digest to dev/ reaches usw2 after the grace, and its
        euw1 job ends FAILED POLICY_DENIED by the worker's policy check."""
        digest = pushed.denied_untagged.digest
        document = cli_json(
            stack.config, "status", "--repository", "dev/untagged", "--image-digest", digest
        )
        by_name = {s["registryName"]: s for s in document["replicationStatuses"]}
        assert by_name[USW2]["status"] == "COMPLETE"
        assert by_name[EUW1]["status"] == "FAILED"
        assert by_name[EUW1]["failureCode"] == "POLICY_DENIED"
        assert skopeo.digest_of(f"{stack.registries[USW2].host}/dev/untagged@{digest}") == digest

    @pytest.mark.parametrize(
        ("repository", "euw1_state"),
        [("prod/multi", "COMPLETE"), ("dev/multi", "FAILED")],
        ids=["allowed-index", "denied-index"],
    )
    def test_index_push_is_one_job_per_destination(
        self, stack: Stack, pushed: Pushed, repository: str, euw1_state: str
    ) -> None:
        """An index push and its children's untagged pushes leave one job per destination:
        the index's, tagged (`replicator jobs --json`); a denied index too."""
        built = pushed.index if repository == "prod/multi" else pushed.denied_index
        listed = cli_json(stack.config, "jobs")["jobs"]
        jobs = [j for j in listed if j["repository"] == repository]
        assert {j["destination"]: j["state"] for j in jobs} == {
            USW2: "COMPLETE",
            EUW1: euw1_state,
        }
        assert len(jobs) == len(DESTINATIONS)
        assert {(j["digest"], j["tag"]) for j in jobs} == {(built.digest, "v1")}

    def test_every_job_is_unique_and_finished(self, stack: Stack, pushed: Pushed) -> None:
        """The module's five pushes made exactly ten jobs, one per (image, destination)."""
        rows = journal(stack).jobs()
        keys = {row.key for row in rows}
        assert len(keys) == len(rows) == 10
        assert {row.state for row in rows} == {JobState.COMPLETE, JobState.FAILED}

    def test_one_way_destinations_cost_no_own_write_records(
        self, stack: Stack, pushed: Pushed
    ) -> None:
        """usw2 and euw1 replicate nowhere, so their events can make no job back: the daemon
        journals none of its writes there (domain/events/echoes.py needs them only in a loop)."""
        assert pushed.image.digest
        path = stack.settings.journal_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as connection:
            assert connection.execute("SELECT COUNT(*) FROM own_writes").fetchone() == (0,)


class TestMetrics:
    """/metrics counts what the daemon did."""

    def test_metrics_show_events_jobs_blobs_bytes_and_latency(
        self, stack: Stack, pushed: Pushed
    ) -> None:
        """Accepted events, finished jobs per destination, copied blobs and bytes, the latency
        histogram and the journal gauges are all in the exposition."""
        text = stack.daemon.metrics()
        assert metric_value(text, "replicator_events_total", outcome="accepted") >= 3
        finished = "replicator_jobs_finished_total"
        assert metric_value(text, finished, destination=USW2, result="complete") == 5
        assert metric_value(text, finished, destination=EUW1, result="complete") == 2
        assert metric_value(text, finished, destination=EUW1, result="failed") == 3
        assert metric_value(text, "replicator_blobs_total") > 0
        assert metric_value(text, "replicator_copied_bytes_total") > 40 * KIB
        latency = "replicator_replication_latency_seconds_count"
        assert metric_value(text, latency, destination=USW2) == 5
        # The journal's gauges are read again within a second of a job's end.
        text = wait_for_metrics(
            stack,
            lambda t: metric_value(t, "replicator_jobs", state="complete", destination=EUW1) == 2,
        )
        assert metric_value(text, "replicator_journal_backlog") == 0
        age = "replicator_oldest_unreplicated_push_age_seconds"
        assert metric_value(text, age, destination=EUW1) == 0
        assert metric_value(text, "replicator_registry_requests_total", method="put") > 0

    def test_health_endpoints_answer(self, stack: Stack) -> None:
        """/healthz and /readyz answer 200 while broker and journal are there."""
        assert stack.daemon.get("/healthz").status_code == 200
        assert stack.daemon.readyz() == 200


def _layer(digest: str) -> bytes:
    return envelope("prod/app", digest, media_type="application/vnd.oci.image.layer.v1.tar+gzip")


GOOD_DIGEST = "sha256:" + "ab" * 32


def _ecr_push(account: str, region: str) -> bytes:
    """An EventBridge `ECR Image Action` push naming the registry at `account` and `region`."""
    return json.dumps(
        {
            "version": "0",
            "id": f"ecr-{account}-{region}",
            "detail-type": "ECR Image Action",
            "source": "aws.ecr",
            "account": account,
            "time": "2026-01-01T00:00:00Z",
            "region": region,
            "detail": {
                "result": "SUCCESS",
                "repository-name": "prod/app",
                "image-digest": GOOD_DIGEST,
                "action-type": "PUSH",
                "image-tag": "v9",
            },
        }
    ).encode()


ECR_UNKNOWN_LOCATION = _ecr_push("999999999999", "us-east-1")
# On use1's topic, a body naming usw2 (same account, another region): a topic speaks only for
# its own source.
ECR_OTHER_SOURCE = _ecr_push(SOURCE_ACCOUNT, REGIONS[USW2])
# A repository no rule replicates: its events are accepted and make no job.
UNREPLICATED = "other/app"


def _stamped(timestamp: str) -> bytes:
    """A push of UNREPLICATED stamped `timestamp`: RFC 3339 the parser lets through."""
    document = json.loads(envelope(UNREPLICATED, GOOD_DIGEST, tag="x"))
    document["events"][0]["timestamp"] = timestamp
    return json.dumps(document).encode()


# (topic source, payload, outcome, reason word the journal records)
BAD_INPUTS = {
    "invalid_json": (USE1, b'{"events": [', EventOutcome.REJECTED, "invalid_json"),
    "unknown_source": (
        "nowhere", envelope("prod/app", GOOD_DIGEST, tag="x"), EventOutcome.REJECTED,
        "unknown_source",
    ),
    "unknown_account_region": (
        USE1, ECR_UNKNOWN_LOCATION, EventOutcome.REJECTED, "unknown_account_region"
    ),
    "source_mismatch": (USE1, ECR_OTHER_SOURCE, EventOutcome.REJECTED, "source_mismatch"),
    "invalid_repository": (
        USE1, envelope("Prod/../App", GOOD_DIGEST, tag="x"), EventOutcome.REJECTED,
        "invalid_repository",
    ),
    "invalid_digest": (
        USE1, envelope("prod/app", "sha256:xyz", tag="x"), EventOutcome.REJECTED,
        "invalid_digest",
    ),
    "over_the_payload_cap": (
        USE1, b'{"events": [], "padding": "' + b"x" * OVER_THE_CAP + b'"}', EventOutcome.REJECTED,
        "too_large",
    ),
    # Moments outside what datetime holds once killed the daemon, and the persistent session
    # redelivered them after every restart.
    "timestamp_year_0": (
        USE1, _stamped("0000-01-01T00:00:00Z"), EventOutcome.ACCEPTED, "no rule matches"
    ),
    "timestamp_9999_negative_offset": (
        USE1, _stamped("9999-12-31T23:59:59-01:00"), EventOutcome.ACCEPTED, "no rule matches"
    ),
    "blob_push": (USE1, _layer(GOOD_DIGEST), EventOutcome.IGNORED, "blob_push"),
    "pull": (
        USE1, envelope("prod/app", GOOD_DIGEST, tag="v1", action="pull"), EventOutcome.IGNORED,
        "pull",
    ),
}  # fmt: skip


# A push right after a flood reaches its destination within this (a push alone takes well
# under a second); the flood once delayed it past 60 s.
AFTER_FLOOD_SECONDS = 10.0


class TestFlood:
    """A flood of ignored events does not grow the journal or delay the next push."""

    def test_one_mib_of_pull_events_then_a_push(
        self, stack: Stack, pushed: Pushed, layout: OCILayout
    ) -> None:
        """A 1 MiB envelope of ~33,000 pull events published to the broker is journalled as
        one ignored row (under 2 MB of journal), and an image pushed right after replicates
        within AFTER_FLOOD_SECONDS."""
        payload, count = pull_flood()
        database = stack.folder / "journal.db"
        before = journal_bytes(database)
        publish(stack.broker.port, f"registry/{USE1}/events", payload)
        tag = "after-flood"
        good = layout.image(tag, [LayerSpec(1, 8 * KIB), LayerSpec(777, KIB)])
        skopeo.push_layout(layout.path, tag, f"{stack.source.host}/prod/after:{tag}")
        pushed_at = time.monotonic()
        usw2 = stack.registries[USW2]
        wait_for(
            lambda: manifest_present(usw2.url, "prod/after", tag),
            timeout=AFTER_FLOOD_SECONDS,
            what=f"prod/after:{tag} at usw2 after the flood",
        )
        replicated_after = time.monotonic() - pushed_at
        grown = journal_bytes(database) - before
        digest = hashlib.sha256(payload).hexdigest()
        [row] = [e for e in journal(stack).events() if e.payload_sha256 == digest]
        assert (row.outcome, row.reason) == (
            EventOutcome.IGNORED,
            f"{count} events ignored: pull {count}",
        )
        assert grown < FLOOD_JOURNAL_BYTES, grown
        assert skopeo.digest_of(f"{usw2.host}/prod/after:{tag}") == good.digest
        record_figures(
            "flood_then_push",
            {
                "payload_bytes": len(payload),
                "pull_events": count,
                "journal_bytes_grown": grown,
                "push_replicated_after_seconds": round(replicated_after, 2),
            },
        )


class TestBadInput:
    """Each bad payload is recorded with its reason and the daemon goes on."""

    @pytest.mark.parametrize("name", list(BAD_INPUTS), ids=list(BAD_INPUTS))
    def test_bad_input_is_recorded_and_the_next_push_replicates(
        self, stack: Stack, pushed: Pushed, layout: OCILayout, name: str
    ) -> None:
        """A bad payload on registry/<name>/events is journalled rejected or ignored with its
        reason (rejections logged once), and an image pushed right after still replicates."""
        topic_source, payload, outcome, reason = BAD_INPUTS[name]
        publish(stack.broker.port, f"registry/{topic_source}/events", payload)
        tag = f"after-{name.replace('_', '-')}"
        good = layout.image(tag, [LayerSpec(1, 8 * KIB), LayerSpec(100 + len(name), KIB)])
        skopeo.push_layout(layout.path, tag, f"{stack.source.host}/prod/after:{tag}")
        usw2 = stack.registries[USW2].url
        wait_for(
            lambda: manifest_present(usw2, "prod/after", tag),
            timeout=REPLICATED_WITHIN_SECONDS,
            what=f"prod/after:{tag} at usw2",
        )
        digest = hashlib.sha256(payload).hexdigest()
        recorded = [e for e in journal(stack).events() if e.payload_sha256 == digest]
        assert [e.outcome for e in recorded] == [outcome]
        assert reason in recorded[0].reason
        assert recorded[0].payload_size == len(payload)
        if outcome is EventOutcome.REJECTED:
            logged = [
                line
                for line in stack.daemon.events("event_rejected")
                if line.get("reason") == reason
                and line.get("topic") == f"registry/{topic_source}/events"
            ]
            assert len(logged) == 1
        assert skopeo.digest_of(f"{stack.registries[USW2].host}/prod/after:{tag}") == good.digest


class TestReferrers:
    """Signatures travel as their own pushes: a job does not sweep the repository's tags."""

    def test_signature_tag_pushed_later_is_replicated_by_its_own_event(
        self, stack: Stack, pushed: Pushed, layout: OCILayout
    ) -> None:
        """A cosign-style `sha256-<hex>.sig` tag pushed after its image reaches both
        destinations through its own push event, with the source's digest."""
        tag = pushed.image.digest.replace(":", "-") + ".sig"
        signature = layout.image(tag, [LayerSpec(900, 512)], label="signature")
        skopeo.push_layout(layout.path, tag, f"{stack.source.host}/prod/app:{tag}")
        for destination in DESTINATIONS:
            url = stack.registries[destination].url
            wait_for(
                lambda url=url: manifest_present(url, "prod/app", tag),
                timeout=REPLICATED_WITHIN_SECONDS,
                what=f"prod/app:{tag} at {destination}",
            )
            target = stack.registries[destination].host
            assert skopeo.digest_of(f"{target}/prod/app:{tag}") == signature.digest
