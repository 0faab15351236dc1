"""Every registry's webhook end to end: an image pushed with skopeo to a docker-registry, that
registry's sample body rewritten for it and posted to `replicator bridge`, then mosquitto, then
`replicator run`, and the image at the destinations."""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from replicator.domain.jobs import JobState
from replicator.journal import EventOutcome
from replicator.journal.deferred import Kept
from tests.support import skopeo
from tests.support.daemon import (
    REGIONS,
    SOURCE_ACCOUNT,
    USE1,
    USW2,
    JournalReader,
    Stack,
    manifest_present,
    metric_value,
    start_stack,
    wait_for,
)
from tests.support.fault_proxy import Fault, FaultProxy, manifest_requests
from tests.support.fuzz_targets import INTAKE_SOURCE, IntakeHarness
from tests.support.images import LayerSpec, OCILayout
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.stack_fixtures import StackFactory

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "webhooks"
SAMPLE_DIGEST = "sha256:8d60d2f4b6119da7186f160712926ef3bff38192b6bfac9d06aafb95027079c7"
GAR_IMAGE = "us-docker.pkg.dev/example-project/prod/web"
# Webhook -> bridge -> broker -> daemon -> copy takes well under a second for a small image;
# 30 s covers a loaded 2-core machine.
REPLICATED_WITHIN_SECONDS = 30.0
KIB = 1024
JSON = {"content-type": "application/json"}
# (sample, headers its sender adds); each format gets its own repository prod/<format>.
FORMATS = {
    "distribution": ("distribution-push.json",
                     {"content-type": "application/vnd.docker.distribution.events.v2+json"}),
    "ecr": ("ecr-push.json", {"content-type": "application/json; charset=utf-8"}),
    "harbor": ("harbor-push.json", JSON),
    "harbor-cloudevents": ("harbor-cloudevents-push.json",
                           {"content-type": "application/cloudevents+json"}),
    "quay": ("quay-push.json", JSON),
    "acr": ("acr-push.json", JSON),
    "zot": ("zot-push.json", {**JSON, "ce-type": "zotregistry.image.updated", "ce-id": "z-1"}),
    "github": ("github-push.json", {**JSON, "x-github-event": "registry_package"}),
    "artifactory": ("artifactory-push.json", JSON),
    "gar": ("gar-push.json", JSON),
    "gitea": ("gitea-push.json", {**JSON, "x-gitea-event": "package", "x-github-event": "package"}),
    "dockerhub": ("dockerhub-push.json", JSON),
    "alibaba": ("alibaba-push.json", JSON),
    "nexus": ("nexus-push.json", {**JSON, "x-nexus-webhook-id": "rm:repository:component"}),
}  # fmt: skip
# The delete bodies (Quay and GitHub send none).
DELETES = {
    "distribution": "distribution-delete.json", "ecr": "ecr-delete.json",
    "harbor": "harbor-delete.json", "harbor-cloudevents": "harbor-cloudevents-delete.json",
    "acr": "acr-delete.json", "zot": "zot-delete.json", "artifactory": "artifactory-delete.json",
    "gar": "gar-delete.json", "gitea": "gitea-delete.json", "nexus": "nexus-delete.json",
}  # fmt: skip
# The formats that name no digest: the daemon reads the tag at the source.
BY_TAG = {"quay", "artifactory", "gitea", "dockerhub", "nexus"}
# A hung source holds a HEAD this long (the client's read timeout is 120 s); intake gives up on
# it after 5 s, so the push behind it arrives within 5 s plus a copy (20 s on a loaded machine).
HUNG_SECONDS = 60.0
HELD_AT_MOST_SECONDS = 20.0
# A moment every kept message is due by.
T_DUE = datetime(2100, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def stack(module_stack_factory: StackFactory) -> Stack:
    """Three registries (use1 sends no notifications: the tests post), broker, bridge, daemon."""
    return module_stack_factory("webhooks", notifications=False)


@pytest.fixture(scope="module")
def deletes_replicated(stack: Stack) -> Stack:
    """The stack with use1's rule replicating deletes (applied with SIGHUP)."""
    rules = stack.folder / f"replicator-{USE1}-replication.json"
    document = json.loads(rules.read_text())
    for rule in document["rules"]:
        rule["deleteReplication"] = {"enabled": True}
    rules.write_text(json.dumps(document))
    before = len(stack.daemon.events("config_reloaded"))
    stack.daemon.send(signal.SIGHUP)
    wait_for(lambda: len(stack.daemon.events("config_reloaded")) > before,
             timeout=REPLICATED_WITHIN_SECONDS, what="the daemon's config_reloaded")  # fmt: skip
    return stack


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> OCILayout:
    """The images of this module, one per format, in one OCI layout."""
    return OCILayout(tmp_path_factory.mktemp("webhooks-layout"))


def rewritten(
    format_name: str, host: str, digest: str, *, repository: str = "", sample: str = ""
) -> bytes:
    """The format's sample body (its push, or `sample`) naming `repository:v1` (default
    prod/<format>) at `host` with `digest`."""
    text = (SAMPLES / (sample or FORMATS[format_name][0])).read_text()
    repository = repository or f"prod/{format_name}"
    text = text.replace(SAMPLE_DIGEST, digest).replace(SAMPLE_DIGEST[7:], digest[7:])
    text = text.replace("ghcr.io/prod/web", f"{host}/{repository}")
    text = text.replace("registry.example.com", host).replace("prod/web", repository)
    document = json.loads(text)
    if format_name == "ecr":
        document["account"], document["region"] = SOURCE_ACCOUNT, REGIONS[USE1]
    if format_name == "artifactory":
        # The published repository is <repository key>/<image name>: key "prod" here.
        key, _, image = repository.partition("/")
        document["data"]["repo_key"], document["data"]["image_name"] = key, image
    if format_name == "dockerhub":
        # Docker Hub's callback_url names Docker Hub: here the source registry plays it.
        document["callback_url"] = f"https://{host}/u/{repository}/hook/1/"
    if format_name == "gitea":
        owner, _, name = repository.partition("/")
        document["package"]["owner"]["login"], document["package"]["name"] = owner, name
    if format_name == "gar":
        data = base64.b64decode(document["message"]["data"]).decode()
        data = data.replace(SAMPLE_DIGEST, digest).replace(GAR_IMAGE, f"{host}/{repository}")
        document["message"]["data"] = base64.b64encode(data.encode()).decode()
    return json.dumps(document).encode()


@pytest.mark.slow
@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_webhook_replicates(stack: Stack, layout: OCILayout, format_name: str) -> None:
    """The registry's push webhook, posted twice (senders retry), brings the image to both
    destinations once; tag-only formats are resolved at the source and say so."""
    seed = 100 + sorted(FORMATS).index(format_name)
    image = layout.image(format_name, [LayerSpec(seed, 4 * KIB)], label=format_name)
    repository = f"prod/{format_name}"
    skopeo.push_layout(layout.path, format_name, f"{stack.source.host}/{repository}:v1")
    body = rewritten(format_name, stack.source.host, image.digest)
    for _ in range(2):
        response = httpx.post(
            stack.bridge.events_url(USE1), content=body, headers=FORMATS[format_name][1]
        )
        assert response.status_code == 200, response.text
        assert response.json()["published"] is True
    destination = stack.registries[USW2].url
    wait_for(
        lambda: manifest_present(destination, repository, image.digest),
        timeout=REPLICATED_WITHIN_SECONDS,
        what=f"{repository}@{image.digest} at {USW2}",
    )
    reader = JournalReader(stack.settings.journal_url)
    wait_for(
        lambda: all(
            row.state is JobState.COMPLETE for row in reader.jobs() if row.repository == repository
        ),
        timeout=REPLICATED_WITHIN_SECONDS,
        what=f"every job of {repository} COMPLETE",
    )
    assert skopeo.digest_of(f"{stack.registries[USW2].host}/{repository}:v1") == image.digest
    events = [e for e in reader.events() if f'"{repository}"'.encode() in e.payload]
    assert events
    if format_name in BY_TAG:
        assert any("digest resolved at the source" in (e.reason or "") for e in events)
    metrics = httpx.get(f"{stack.bridge.url}/metrics").text
    published = metric_value(
        metrics, "replicator_bridge_requests_total",
        source=USE1, format=format_name, outcome="published",
    )  # fmt: skip
    assert published >= 2


def post(stack: Stack, format_name: str, body: bytes, *, delete: bool = False) -> None:
    """Post `body` as the format's sender would; it must be published."""
    headers = dict(FORMATS[format_name][1])
    if delete and format_name == "zot":
        headers["ce-type"] = "zotregistry.image.deleted"  # zot's type is a header
    response = httpx.post(stack.bridge.events_url(USE1), content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["published"] is True


@pytest.mark.slow
@pytest.mark.parametrize("format_name", sorted(DELETES))
def test_delete_webhook_replicates(
    deletes_replicated: Stack, layout: OCILayout, format_name: str
) -> None:
    """The registry's delete webhook, for an image deleted at the source, deletes it at the
    destination that allows deletes (usw2, same account)."""
    stack = deletes_replicated
    seed = 200 + sorted(DELETES).index(format_name)
    name = f"del-{format_name}"
    image = layout.image(name, [LayerSpec(seed, 4 * KIB)], label=name)
    repository = f"prod/{name}"
    skopeo.push_layout(layout.path, name, f"{stack.source.host}/{repository}:v1")
    post(stack, format_name, rewritten(format_name, stack.source.host, image.digest,
                                       repository=repository))  # fmt: skip
    destination = stack.registries[USW2].url
    wait_for(
        lambda: manifest_present(destination, repository, image.digest),
        timeout=REPLICATED_WITHIN_SECONDS,
        what=f"{repository}@{image.digest} at {USW2}",
    )
    url = f"{stack.source.url}/v2/{repository}/manifests/{image.digest}"
    assert httpx.delete(url).status_code == 202
    deletion = rewritten(
        format_name, stack.source.host, image.digest,
        repository=repository, sample=DELETES[format_name],
    )  # fmt: skip
    post(stack, format_name, deletion, delete=True)
    wait_for(
        lambda: not manifest_present(destination, repository, image.digest),
        timeout=REPLICATED_WITHIN_SECONDS,
        what=f"{repository}@{image.digest} gone from {USW2}",
    )


def test_tag_gone_from_the_source_is_ignored(stack: Stack) -> None:
    """A Quay push of a tag the source does not have (deleted since, or never there) is read
    at the source, found missing, and recorded ignored `tag_not_found`: no job."""
    body = rewritten("quay", stack.source.host, SAMPLE_DIGEST).replace(b"prod/quay", b"prod/ghost")
    response = httpx.post(stack.bridge.events_url(USE1), content=body, headers=JSON)
    assert response.status_code == 200
    reader = JournalReader(stack.settings.journal_url)

    def recorded() -> bool:
        return any(b"prod/ghost" in e.payload for e in reader.events())

    wait_for(recorded, timeout=REPLICATED_WITHIN_SECONDS, what="the ghost push recorded")
    [event] = [e for e in reader.events() if b"prod/ghost" in e.payload]
    assert (event.outcome, event.reason) == (EventOutcome.IGNORED, "tag_not_found")
    assert not [row for row in reader.jobs() if row.repository == "prod/ghost"]


def test_tag_the_source_cannot_answer_for_is_kept_then_given_up(tmp_path: Path) -> None:
    """A tag-only push whose source cannot be reached (nothing listens at its URL) is kept
    aside (recorded `deferred`, with the error) and intake goes on; handled again with its
    attempts used up, it is rejected `unresolved_tag`, saying so, and no longer kept."""
    harness = IntakeHarness(tmp_path)
    try:
        event = {"id": "q-1", "action": "push", "format": "quay",
                 "target": {"repository": "team/app", "tag": "v1"}}  # fmt: skip
        payload = json.dumps({"events": [event]}).encode()
        [deferred] = harness.handle(payload)
        assert deferred.outcome is EventOutcome.DEFERRED
        assert deferred.reason.startswith("unresolved_tag: attempt 1 of 10, again in ")
        journal, topic = harness.journal, f"registry/{INTAKE_SOURCE}/events"
        last = Kept(topic, INTAKE_SOURCE, payload, deferred.payload_sha256, 9, T_DUE, "v1: down")
        harness.run(lambda: journal.defer_message(last))  # as after nine failed reads
        [kept] = harness.run(lambda: journal.claim_deferred(5, T_DUE, T_DUE))
        harness.run(lambda: harness.daemon.handle_kept(kept))
        [rejected] = harness.run(lambda: journal.events(limit=1))
        assert rejected.outcome is EventOutcome.REJECTED
        assert rejected.reason.startswith("unresolved_tag: gave up after 10 attempts: v1:")
        assert harness.run(journal.deferred_waiting) == (0, None)
    finally:
        harness.close()


@pytest.fixture
def fronted(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, FaultProxy]]:
    """A stack whose daemon reaches use1 through a fault proxy (to answer 503 for it)."""
    proxies: list[FaultProxy] = []

    def front(registry: Registry) -> str:
        proxy = FaultProxy(registry.url)
        proxy.start()
        proxies.append(proxy)
        return proxy.url

    started = start_stack(
        tmp_path_factory.mktemp("webhooks-fronted"),
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        notifications=False,
        front={USE1: front},
    )
    try:
        yield started, proxies[0]
    finally:
        started.stop()
        for proxy in proxies:
            proxy.stop()


@pytest.mark.slow
def test_tag_push_survives_a_source_that_cannot_answer(
    fronted: tuple[Stack, FaultProxy], layout: OCILayout
) -> None:
    """A Quay push whose source answers 503 when it arrives is kept and read again later (in
    vain, then once the source answers), while intake goes on: another push meanwhile is
    replicated, and then the image is; the same push delivered again changes nothing."""
    stack, proxy = fronted
    late = layout.image("late", [LayerSpec(301, 4 * KIB)], label="late")
    other = layout.image("other", [LayerSpec(302, 4 * KIB)], label="other")
    skopeo.push_layout(layout.path, "late", f"{stack.source.host}/prod/quay:v1")
    skopeo.push_layout(layout.path, "other", f"{stack.source.host}/prod/other:v1")
    down = proxy.add(Fault.status_code(503, manifest_requests("prod/quay"), times=None))
    quay = rewritten("quay", proxy.host, late.digest)
    post(stack, "quay", quay)
    post(stack, "distribution", rewritten("distribution", proxy.host, other.digest,
                                          repository="prod/other"))  # fmt: skip
    usw2 = stack.registries[USW2].url
    wait_for(lambda: manifest_present(usw2, "prod/other", other.digest),
             timeout=REPLICATED_WITHIN_SECONDS,
             what="prod/other at usw2 while use1 answers 503")  # fmt: skip
    assert down.injected > 0
    assert not manifest_present(usw2, "prod/quay", late.digest)
    wait_for(lambda: metric_value(stack.daemon.metrics(), "replicator_events_deferred") == 1,
             timeout=REPLICATED_WITHIN_SECONDS,
             what="the message kept aside, in the gauge")  # fmt: skip
    wait_for(lambda: len(stack.daemon.events("event_deferred")) >= 2,
             timeout=REPLICATED_WITHIN_SECONDS,
             what="the kept message read again, in vain")  # fmt: skip
    proxy.clear()
    wait_for(lambda: manifest_present(usw2, "prod/quay", late.digest),
             timeout=REPLICATED_WITHIN_SECONDS,
             what="prod/quay at usw2 once use1 answers")  # fmt: skip
    assert [e["attempts"] for e in stack.daemon.events("event_deferred")][:2] == [1, 2]
    wait_for(lambda: metric_value(stack.daemon.metrics(), "replicator_events_deferred") == 0,
             timeout=REPLICATED_WITHIN_SECONDS, what="no message kept aside any more")  # fmt: skip
    reader = JournalReader(stack.settings.journal_url)
    jobs = sorted(row.id for row in reader.jobs() if row.repository == "prod/quay")
    assert len(jobs) == len(stack.registries) - 1  # one per destination
    post(stack, "quay", quay)
    wait_for(lambda: len([e for e in reader.events() if b"prod/quay" in e.payload]) >= 2,
             timeout=REPLICATED_WITHIN_SECONDS, what="the redelivered push recorded")  # fmt: skip
    assert sorted(row.id for row in reader.jobs() if row.repository == "prod/quay") == jobs


@pytest.mark.slow
def test_tag_push_to_a_hung_source_holds_intake_for_seconds_only(
    fronted: tuple[Stack, FaultProxy], layout: OCILayout
) -> None:
    """A Quay push whose source holds the HEAD of its tag (a hung registry) is kept aside
    after 5 s instead of holding intake for the client's read timeout (120 s): a push posted
    right after it is replicated within seconds, and the kept one once read again."""
    stack, proxy = fronted
    hung = layout.image("hung", [LayerSpec(303, 4 * KIB)], label="hung")
    after = layout.image("after", [LayerSpec(304, 4 * KIB)], label="after")
    skopeo.push_layout(layout.path, "hung", f"{stack.source.host}/prod/quay:v1")
    skopeo.push_layout(layout.path, "after", f"{stack.source.host}/prod/after:v1")
    proxy.add(Fault.stall(manifest_requests("prod/quay"), HUNG_SECONDS))
    post(stack, "quay", rewritten("quay", proxy.host, hung.digest))
    post(stack, "distribution", rewritten("distribution", proxy.host, after.digest,
                                          repository="prod/after"))  # fmt: skip
    usw2 = stack.registries[USW2].url
    wait_for(lambda: manifest_present(usw2, "prod/after", after.digest),
             timeout=HELD_AT_MOST_SECONDS,
             what="prod/after at usw2 behind the hung HEAD")  # fmt: skip
    wait_for(lambda: manifest_present(usw2, "prod/quay", hung.digest),
             timeout=REPLICATED_WITHIN_SECONDS,
             what="prod/quay at usw2 once read again")  # fmt: skip
    [deferred] = stack.daemon.events("event_deferred")[:1]
    assert deferred["error"] == "no answer within 5s"
