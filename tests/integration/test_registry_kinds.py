"""The core end-to-end tests against both registry implementations of the suite: CNCF
distribution (docker-registry) and Pulp (pulp-container with its token auth on;
tests/support/pulp_server.py): copy of an image and an index, copy -r, Pulp as the source,
backfill, and the daemon replicating pushes.

Each Pulp test works in a namespace of its own in the session's Pulp. Pulp answers a mount of a
blob the `from` repository lacks `404 BLOB_UNKNOWN` (the spec says SHOULD 202), so a namespace
that already holds a repository is where copies into it failed before the mount fallback.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from replicator.domain.jobs import JobState
from tests.support import skopeo
from tests.support.copy_cli import assert_digests_present, assert_tags_equal, copy_ok, run_copy
from tests.support.copy_corpus import CopyCorpus
from tests.support.daemon import (
    EUW1,
    USE1,
    USW2,
    JournalReader,
    Stack,
    cli_json,
    envelope,
    manifest_digest,
    publish,
)
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import BuiltImage, LayerSpec, OCILayout
from tests.support.pulp_server import ADMIN, Pulp, registry_get
from tests.support.registry_fixtures import RegistryFactory, Serve
from tests.support.registry_server import Registry
from tests.support.stack_fixtures import StackFactory

# Pulp serves a copy several times slower than docker-registry (three Django processes on two
# loaded cores), and its first request of a session waits for its start.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
_namespaces = itertools.count(1)
# Each case against both implementations; the Pulp ones take 15-45 s on a loaded machine (slow).
KINDS = ["distribution", pytest.param("pulp", marks=pytest.mark.slow)]


@dataclass(frozen=True)
class Target:
    """A registry of one implementation, and where in it this test writes."""

    kind: str
    host: str
    # Prefix of every repository this test names there ("" for a fresh distribution).
    namespace: str
    credentials: tuple[str, str] | None

    def repo(self, repository: str) -> str:
        """`host/[namespace/]repository`."""
        return f"{self.host}/{self.namespace}{repository}"

    def args(self, side: str) -> list[str]:
        """`--dest-creds`/`--src-creds` for `side` ("dest"/"src"), when it needs credentials."""
        if self.credentials is None:
            return []
        return [f"--{side}-creds", ":".join(self.credentials)]

    def tags(self, repository: str) -> list[str]:
        """Sorted tags of a repository."""
        response = registry_get(self.host, f"/v2/{self.namespace}{repository}/tags/list",
                                self.credentials)  # fmt: skip
        response.raise_for_status()
        return sorted(response.json()["tags"] or [])

    def digest(self, repository: str, reference: str) -> str | None:
        """sha256 of the manifest bytes served for repository:reference (None if absent)."""
        response = registry_get(self.host,
                                f"/v2/{self.namespace}{repository}/manifests/{reference}",
                                self.credentials)  # fmt: skip
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return f"sha256:{hashlib.sha256(response.content).hexdigest()}"

    def assert_serves(self, repository: str, references: dict[str, str]) -> None:
        """Each reference (tag or digest) of repository is served with its digest's bytes."""
        for reference, digest in references.items():
            assert self.digest(repository, reference) == digest, (self.kind, repository, reference)


def pulp_target(pulp: Pulp) -> Target:
    """The session's Pulp, in a namespace no other test uses."""
    return Target("pulp", pulp.host, f"n{next(_namespaces)}/", pulp.credentials)


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, registry_factory: RegistryFactory) -> Iterator[Target]:
    """A destination of each implementation: a fresh docker-registry, or the session's Pulp."""
    if request.param == "pulp":
        yield pulp_target(request.getfixturevalue("pulp"))
        return
    registry: Registry = registry_factory()
    yield Target("distribution", registry.host, "", None)
    registry.cleanup()


class TestCopy:
    def test_image_and_index_arrive_with_every_digest(
        self, copy_corpus: CopyCorpus, target: Target
    ) -> None:
        """An image and a two-platform index land with the source's digests (the index's children
        too), and copying the index again moves no byte."""
        image = copy_corpus.images["team/app"]["v1"]
        index = copy_corpus.images["team/multi"]["1.0"]
        dest = target.args("dest")
        copy_ok(copy_corpus.ref("team/app", "v1"), target.repo("team/app") + ":v1", *dest)
        copy_ok(copy_corpus.ref("team/multi", "1.0"), target.repo("team/multi") + ":1.0", *dest)
        target.assert_serves("team/app", {"v1": image.digest})
        target.assert_serves("team/multi", {"1.0": index.digest} | {
            digest: digest for digest in index.manifest_digests})  # fmt: skip
        again = copy_ok(copy_corpus.ref("team/multi", "1.0"), target.repo("team/multi") + ":1.0",
                        *dest)  # fmt: skip
        assert (again["blobs_copied"], again["bytes_copied"]) == (0, 0)

    def test_recursive_copy_into_a_namespace_holding_a_repository(
        self, copy_corpus: CopyCorpus, target: Target
    ) -> None:
        """`copy -r` into a namespace that already holds a repository sharing base layers lands
        every image with the source's tags (mounts the registry refuses become uploads), and a
        second run moves no byte."""
        dest = target.args("dest")
        copy_ok(copy_corpus.ref("team/base-a", "1"), target.repo("team/base-a") + ":1", *dest)
        repositories = ("team/base-b", "team/docker")
        named = [arg for name in repositories for arg in ("--repository", name)]
        command = ["-r", copy_corpus.ref("team"), target.repo("team"), *named, *dest]
        summary = copy_ok(*command)
        assert summary["blobs_copied"] > 0
        for repository in repositories:
            assert target.tags(repository) == sorted(copy_corpus.tags(repository)), repository
            target.assert_serves(repository, copy_corpus.tags(repository))
        again = copy_ok(*command)
        assert (again["blobs_copied"], again["bytes_copied"]) == (0, 0)


@pytest.mark.slow
class TestPulpAsSource:
    def test_recursive_copy_out_of_pulp(
        self, copy_corpus: CopyCorpus, pulp: Pulp, dst_registry: Registry
    ) -> None:
        """Pulp as the source (its token service, its catalog and tag lists, blob GETs redirected
        to its content app): `copy -r` of a Pulp namespace lands a Docker manifest list and a
        schema 2 image in distribution with Pulp's digests."""
        source = pulp_target(pulp)
        copy_ok("-r", copy_corpus.ref("team"), source.repo("team"), "--repository",
                "team/dockerlist", "--repository", "team/docker", *source.args("dest"))  # fmt: skip
        summary = copy_ok("-r", source.repo("team"), f"{dst_registry.host}/copied",
                          *source.args("src"))  # fmt: skip
        assert summary["blobs_copied"] > 0
        for repository in ("team/dockerlist", "team/docker"):
            index = copy_corpus.images[repository]["1.0"]
            name = f"{dst_registry.host}/copied/{repository.removeprefix('team/')}"
            assert_tags_equal(name, {"1.0": index.digest})
            assert_digests_present(name, index.manifest_digests)


@pytest.mark.slow
class TestHostilePulp:
    def test_manifest_not_matching_its_digest_is_refused_and_nothing_lands(
        self, copy_corpus: CopyCorpus, pulp: Pulp, dst_registry: Registry, serve: Serve
    ) -> None:
        """Pulp reached through a proxy that flips the first byte of every manifest it serves
        (Pulp's Docker-Content-Digest left as is, its token service and redirects unchanged): a
        copy out of it exits 1 with INVALID_MANIFEST naming the two digests, and no tag lands
        at the destination."""
        source = pulp_target(pulp)
        copy_ok(copy_corpus.ref("team/app", "v1"), source.repo("team/app") + ":v1",
                *source.args("dest"))  # fmt: skip
        proxy = serve(FaultProxy(f"http://{pulp.host}"))
        fault = proxy.add(Fault.corrupt(requests("GET", r"/manifests/")))
        run = run_copy(f"{proxy.host}/{source.namespace}team/app:v1",
                       f"{dst_registry.host}/team/app:v1", *source.args("src"))  # fmt: skip
        assert run.exit_code == 1, str(run)
        assert run.failure_codes == ["INVALID_MANIFEST"], str(run)
        assert "manifest bytes hash to" in run.stderr, str(run)
        assert fault.injected >= 1
        assert skopeo.list_tags(f"{dst_registry.host}/team/app") == []


# Webhook -> bridge -> broker -> daemon -> copy: well under a second for distribution, some
# seconds into Pulp; a loaded 2-core machine stretches both.
REPLICATED_WITHIN_SECONDS = 120.0
KIB = 1024


@dataclass(frozen=True)
class Images:
    """What a test pushed to the source use1 under `prefix`: a base image already copied to
    the destination (so the namespace holds a repository), an image sharing its layers, and
    a two-platform index."""

    prefix: str
    base: BuiltImage
    app: BuiltImage
    index: BuiltImage

    def expected(self) -> dict[str, dict[str, str]]:
        """repository -> {reference: digest} the destination must serve."""
        return {
            f"{self.prefix}/app": {"v1": self.app.digest},
            f"{self.prefix}/multi": {"v1": self.index.digest}
            | {digest: digest for digest in self.index.manifest_digests},
        }


def stack_into(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, *, daemon: bool, pulp_as: str = USW2
) -> tuple[Stack, Target]:
    """The end-to-end stack of tests/support/daemon.py (source use1, destinations usw2 and
    euw1, bridge, broker, daemon when asked) with registry `pulp_as` of `kind`; it as a
    Target."""
    stack_factory: StackFactory = request.getfixturevalue("stack_factory")
    if kind == "distribution":
        stack = stack_factory(notifications=daemon, start_daemon=daemon)
        return stack, Target(kind, stack.registries[pulp_as].host, "", None)
    pulp: Pulp = request.getfixturevalue("pulp")
    password = tmp_path / "pulp-password"
    password.write_text(pulp.password + "\n")
    section = {"username": ADMIN, "password_file": str(password)}
    stack = stack_factory(notifications=daemon and pulp_as != USE1, start_daemon=daemon,
                          front={pulp_as: lambda _unused: f"http://{pulp.host}"},
                          extra={pulp_as: section})  # fmt: skip
    return stack, Target(kind, pulp.host, "", pulp.credentials)


def push_images(stack: Stack, target: Target, layout: OCILayout) -> Images:
    """Build the images; put the base into usw2's namespace through a source repository no rule
    replicates (so no replicator process has seen where its blobs are: only a guessed mount
    finds them), then push the image and the index to the source."""
    number = next(_namespaces)
    prefix, staging = f"prod/n{number}", f"staging/n{number}"
    base_layers = [LayerSpec(seed=11, size=64 * KIB), LayerSpec(seed=12, size=32 * KIB)]
    base = layout.image("base", base_layers, label="base")
    app = layout.image("app", [*base_layers, LayerSpec(seed=13, size=8 * KIB)], label="app")
    index = layout.multi_platform("multi", [*base_layers, LayerSpec(seed=14, size=8 * KIB)])
    host = stack.source.host
    skopeo.push_layout(layout.path, "base", f"{host}/{staging}/base:1")
    copy_ok(f"{host}/{staging}/base:1", f"{target.host}/{prefix}/base:1", *target.args("dest"))
    skopeo.push_layout(layout.path, "app", f"{host}/{prefix}/app:v1")
    skopeo.push_layout(layout.path, "multi", f"{host}/{prefix}/multi:v1")
    return Images(prefix, base, app, index)


@pytest.mark.parametrize("kind", KINDS)
class TestReplicationInto:
    def test_backfill_lands_a_repository_set_in_a_populated_namespace(
        self, kind: str, request: pytest.FixtureRequest, tmp_path: Path
    ) -> None:
        """`backfill` copies what is missing at the destination into a namespace that already
        holds a repository (an image sharing its layers, an index), and a second run finds
        every tag up to date."""
        stack, target = stack_into(kind, request, tmp_path, daemon=False)
        images = push_images(stack, target, OCILayout(tmp_path / "layout"))
        args = ("--destination", USW2, "--repository-prefix", images.prefix)
        summary = cli_json(stack.config, "backfill", *args)
        assert summary["outcome"] == "COMPLETE", summary
        assert summary["destinations"][USW2]["complete"] == 2, summary
        for repository, references in images.expected().items():
            target.assert_serves(repository, references)
        again = cli_json(stack.config, "backfill", *args)
        assert again["up_to_date"] == 2, again

    def test_daemon_replicates_pushes_into_a_populated_namespace(
        self, kind: str, request: pytest.FixtureRequest, tmp_path: Path
    ) -> None:
        """Pushes to the source reach the destination through the bridge, the broker and the
        daemon, into a namespace that already holds a repository, and every job COMPLETEs at
        its first attempt."""
        stack, target = stack_into(kind, request, tmp_path, daemon=True)
        images = push_images(stack, target, OCILayout(tmp_path / "layout"))
        # The image and the index, each to usw2 and euw1.
        jobs = JournalReader(stack.settings.journal_url).wait_finished(
            4, timeout=REPLICATED_WITHIN_SECONDS)  # fmt: skip
        # At the first attempt: a refused mount used to fail the attempt (retried later).
        failed = [(j.repository, j.destination, j.attempts, j.failure_reason) for j in jobs
                  if j.state is not JobState.COMPLETE or j.attempts != 1]  # fmt: skip
        assert failed == []
        for repository, references in images.expected().items():
            target.assert_serves(repository, references)


@pytest.mark.slow
class TestDaemonFromPulp:
    def test_published_event_is_replicated_out_of_pulp(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> None:
        """Pulp as the daemon's source (it sends no webhooks: the event is published on the
        broker as a bridge would): the image and the index it names are read from Pulp with its
        token auth and land at both destinations with Pulp's digests."""
        stack, source = stack_into("pulp", request, tmp_path, daemon=True, pulp_as=USE1)
        layout = OCILayout(tmp_path / "layout")
        layers = [LayerSpec(seed=21, size=32 * KIB), LayerSpec(seed=22, size=8 * KIB)]
        pushed = {"app": layout.image("app", layers, label="from-pulp"),
                  "multi": layout.multi_platform("multi", layers)}  # fmt: skip
        prefix = f"prod/n{next(_namespaces)}"
        # Into Pulp through the stack's idle use1 docker-registry (skopeo waits 10 s on Pulp).
        staging = stack.registries[USE1].host
        for name, image in pushed.items():
            skopeo.push_layout(layout.path, name, f"{staging}/{prefix}/{name}:v1")
            copy_ok(f"{staging}/{prefix}/{name}:v1", source.repo(f"{prefix}/{name}") + ":v1",
                    *source.args("dest"))  # fmt: skip
            publish(stack.broker.port, f"registry/{USE1}/events",
                    envelope(f"{prefix}/{name}", image.digest, tag="v1",
                             media_type=image.media_type))  # fmt: skip
        jobs = JournalReader(stack.settings.journal_url).wait_finished(
            4, timeout=REPLICATED_WITHIN_SECONDS)  # fmt: skip
        assert [(j.repository, j.destination, j.failure_reason) for j in jobs
                if j.state is not JobState.COMPLETE] == []  # fmt: skip
        for destination in (USW2, EUW1):
            url = stack.registries[destination].url
            for name, image in pushed.items():
                assert manifest_digest(url, f"{prefix}/{name}", "v1") == image.digest
