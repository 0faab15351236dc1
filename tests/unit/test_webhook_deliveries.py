"""Real deliveries of every sender (captured, or published by the sender or another project's
fixtures; provenance in tests/data/webhooks/README.md): each is recognised and yields what a
client must replicate, or is acknowledged with its reason, and the table covers every sample."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.domain.events import PushEvent, TagPush
from replicator.domain.events.payloads import parse_payload
from replicator.domain.events.webhooks import format_named
from tests.unit.test_webhooks import ACKNOWLEDGED, EXPECTED, SAMPLES, run

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_IMAGE = "application/vnd.oci.image.manifest.v1+json"

# (sample, format, [(action, repository, digest, tag, media type)])
DELIVERED = [
    ("distribution-captured-manifest.json", "distribution",
     [("push", "corpus/r001",
       "sha256:19b39d967384fcbf2d3ec43e4b4494d0c9cf65794af477f8312fb33c2dc0070d", "v1",
       OCI_IMAGE)]),
    ("distribution-captured-index.json", "distribution",
     [("push", "corpus/r000",
       "sha256:90a6be8c7a864782bfa54ce1fbda4bd31da407c3dbf9d112b8b586c1416487c1", "v1",
       OCI_INDEX)]),
    ("acr-push-captured.json", "acr",
     [("push", "hello-world",
       "sha256:c766679d161d4ffe3dc4503b4c9f90b978f0d363fcedb02d1ae0cd271e645c0a", "test-v1",
       DOCKER_V2)]),
    ("acr-push-docs-2017.json", "acr",
     [("push", "hello-world",
       "sha256:80f0d5c8786bb9e621a45ece0db56d11cdc624ad20da9fe62e9d25490f331d7d", "v1",
       DOCKER_V2)]),
    ("harbor-push-captured.json", "harbor",
     [("push", "library/rumput",
       "sha256:76525f02955aec223342400a080c73024c995c9db1ba2eabf7505cf3bdf3f1f0", "v1", None)]),
    # Harbor writes the digest in `tag` for an untagged artifact.
    ("harbor-docs-push-untagged.json", "harbor",
     [("push", "harbor/alpine",
       "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4", None, None)]),
    ("harbor-docs-delete.json", "harbor",
     [("delete", "harbor/alpine",
       "sha256:2bb501e6173d9d006e56de5bce2720eb06396803300fe1687b58a7ff32bf4c14", None, None)]),
    # Harbor 1.x named its push `pushImage`.
    ("harbor-v1-push-image.json", "harbor",
     [("push", "library/ai-rag",
       "sha256:b4758aaed11c155a476b9857e1178f157759c99cb04c907a04993f5481eff848", "1.2.3", None)]),
    ("harbor-cloudevents-docs-push-untagged.json", "harbor-cloudevents",
     [("push", "harbor/alpine",
       "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4", None, None)]),
    ("harbor-cloudevents-docs-delete.json", "harbor-cloudevents",
     [("delete", "harbor/alpine",
       "sha256:2bb501e6173d9d006e56de5bce2720eb06396803300fe1687b58a7ff32bf4c14", None, None)]),
    # octokit's example: `package_type` says npm, `ecosystem` docker, and the tag's digest is a
    # 40-hex placeholder; the version's name is the manifest digest GHCR names versions by.
    ("github-octokit-registry-package-published-docker.json", "github",
     [("push", "codertocat/hello-world",
       "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498", None,
       DOCKER_V2)]),
    ("github-octokit-package-published-docker.json", "github",
     [("push", "codertocat/hello-world",
       "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498", None,
       DOCKER_V2)]),
    ("artifactory-keel-list-manifest.json", "artifactory",
     [("push", "docker-remote-cache/library/ubuntu", None, "latest", None)]),
    ("dockerhub-keel-karolisr.json", "dockerhub", [("push", "karolisr/keel", None, "0.1.7", None)]),
    ("dockerhub-rabbithook-goliatone.json", "dockerhub",
     [("push", "goliatone/hello-rabbit", None, "latest", None)]),
    # The documentation's sample spells the repository repoTest; registries serve lower case.
    ("alibaba-push-docs.json", "alibaba",
     [("push", "namespace/repotest",
       "sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917", "latest", None)]),
]  # fmt: skip

# Real deliveries that need no work: (sample, format, the reasons they are ignored for).
NO_WORK = [
    ("distribution-captured-blob.json", "distribution", ["blob_push"]),
    ("distribution-captured-mount.json", "distribution", ["blob_mount"]),
    ("distribution-captured-pull.json", "distribution", ["pull"]),
    ("ecr-image-scan.json", "ecr", ["ecr_ecr_image_scan"]),
    ("ecr-scan-resource-change.json", "ecr", ["ecr_ecr_scan_resource_change"]),
    ("ecr-replication.json", "ecr", ["replication_event"]),
    # Harbor 1.10-2.4's "Test Endpoint" posts no body at all.
    ("harbor-test-endpoint.json", "harbor", ["empty_body"]),
    ("harbor-docs-pull.json", "harbor", ["harbor_pull_artifact"]),
    ("harbor-docs-scanning-completed.json", "harbor", ["harbor_scanning_completed"]),
    ("harbor-docs-scanning-stopped.json", "harbor", ["harbor_scanning_stopped"]),
    ("harbor-docs-scanning-failed.json", "harbor", ["harbor_scanning_failed"]),
    ("harbor-docs-quota-exceed.json", "harbor", ["harbor_quota_exceed"]),
    ("harbor-docs-quota-warning.json", "harbor", ["harbor_quota_warning"]),
    ("harbor-docs-replication.json", "harbor", ["harbor_replication"]),
    ("harbor-docs-tag-retention.json", "harbor", ["harbor_tag_retention"]),
    ("harbor-cloudevents-docs-pull.json", "harbor-cloudevents", ["harbor_artifact_pulled"]),
    ("harbor-cloudevents-docs-scanning-completed.json", "harbor-cloudevents",
     ["harbor_scan_completed"]),
    ("harbor-cloudevents-docs-scanning-stopped.json", "harbor-cloudevents",
     ["harbor_scan_stopped"]),
    ("harbor-cloudevents-docs-scanning-failed.json", "harbor-cloudevents", ["harbor_scan_failed"]),
    ("harbor-cloudevents-docs-quota-exceed.json", "harbor-cloudevents",
     ["harbor_quota_exceeded"]),
    ("harbor-cloudevents-docs-quota-warning.json", "harbor-cloudevents", ["harbor_quota_warned"]),
    ("harbor-cloudevents-docs-replication.json", "harbor-cloudevents",
     ["harbor_replication_status_changed"]),
    ("harbor-cloudevents-docs-tag-retention.json", "harbor-cloudevents",
     ["harbor_tag_retention_finished"]),
    ("acr-chart-push.json", "acr", ["acr_chart_push"]),
    ("acr-chart-delete.json", "acr", ["acr_chart_delete"]),
    ("zot-repository-created.json", "zot", ["zot_created"]),
    ("github-octokit-ping-organization.json", "github", ["github_ping"]),
    # JFrog's Test button sends a dummy event of the webhook's first type ("sample_*" values).
    ("artifactory-test-docker-pushed.json", "artifactory", ["artifactory_test"]),
    ("artifactory-test-docker-deleted.json", "artifactory", ["artifactory_test"]),
    ("artifactory-test-docker-promoted.json", "artifactory", ["artifactory_docker_promoted"]),
    ("artifactory-test-artifact-copied.json", "artifactory", ["artifactory_artifact_copied"]),
    # gcr.io's message on the project's topic, for a source whose registry is us-docker.pkg.dev.
    ("gar-gcr-captured.json", "gar", ["gar_other_registry"]),
    # 2013's Docker Hub body named no tag (and `_/` for official images).
    ("dockerhub-2013-no-tag.json", "dockerhub", ["dockerhub_no_tag"]),
    # A delivery of 2 December 2014, as a receiver printed it: no tag then either.
    ("dockerhub-2014-captured-svendowideit.json", "dockerhub", ["dockerhub_no_tag"]),
    # Google's documented tag delete, of us-west1: another location than the source's here.
    ("gar-docs-delete-tag.json", "gar", ["gar_other_registry"]),
    ("nexus-docs-asset-npm.json", "nexus", ["nexus_asset"]),
]  # fmt: skip


def test_every_sample_has_a_case() -> None:
    """Each stored sample body is covered by one of the tables."""
    tables = (EXPECTED, ACKNOWLEDGED, DELIVERED, NO_WORK)
    covered = [case[0] for table in tables for case in table]
    assert sorted(covered) == sorted(p.name for p in SAMPLES.glob("*.json"))


@pytest.mark.parametrize(("name", "format_name", "events"), DELIVERED, ids=lambda v: str(v)[:40])
def test_delivery_normalises(name: str, format_name: str, events: list[tuple[Any, ...]]) -> None:
    """A real push or delete of each sender yields the manifest a client pulls, and the envelope
    the bridge publishes parses in the daemon to the same events."""
    webhook = run(name)
    assert webhook.format == format_named(format_name)
    got = [(e.action, e.repository, e.digest, e.tag, e.media_type) for e in webhook.events]
    assert got == events
    payload = (SAMPLES / name).read_bytes() if format_name == "distribution" else webhook.envelope()
    parsed = parse_payload(payload, topic_source="src", locate=lambda *_: None, sources=["src"])
    kinds = [
        ("push" if isinstance(item, PushEvent | TagPush) else "delete", item.repository, item.tag)
        for item in parsed
    ]
    assert kinds == [(action, repo, tag) for action, repo, _, tag, _ in events]


@pytest.mark.parametrize(("name", "format_name", "reasons"), NO_WORK, ids=lambda v: str(v)[:40])
def test_delivery_is_acknowledged(name: str, format_name: str, reasons: list[str]) -> None:
    """A real delivery that names nothing to copy (a scan, a pull, a blob, a test button, another
    registry's message) is acknowledged with its reason, never refused."""
    webhook = run(name)
    assert (webhook.format, webhook.events, list(webhook.ignored)) == (
        format_named(format_name),
        (),
        reasons,
    )


@pytest.mark.parametrize(
    ("name", "host", "event"),
    [
        ("gar-gcr-captured.json", "gcr.io",
         ("push", "freshly-docker/freshly", "PIG-267-refactor-email-service")),
        ("gar-docs-delete-tag.json", "us-west1-docker.pkg.dev",
         ("delete", "my-project/my-repo/hello-world", "1.1")),
    ],
    ids=["gcr-push", "gar-tag-delete"],
)  # fmt: skip
def test_gar_message_for_its_own_registry_is_published(
    name: str, host: str, event: tuple[str, str, str]
) -> None:
    """A GAR/GCR message is published when the source's registry is the host it names."""
    webhook = run(name, (SAMPLES / name).read_bytes(), host=host)
    assert [(e.action, e.repository, e.tag) for e in webhook.events] == [event]
