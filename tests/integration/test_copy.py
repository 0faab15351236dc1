"""`replicator copy` between two real registries: digests, skips, mounts, indexes, tags, auth."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import httpx
import pytest

from tests.support import skopeo
from tests.support.copy_cli import (
    assert_digests_present,
    assert_tags_equal,
    copy_ok,
    run_copy,
)
from tests.support.copy_corpus import CopyCorpus
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration


def _blob_status(registry: Registry, repository: str, digest: str) -> int:
    return httpx.head(f"{registry.url}/v2/{repository}/blobs/{digest}").status_code


def _first_manifest_put(log: str, repository: str, references: tuple[str, ...]) -> int:
    """Line number of the first manifest PUT of repository to any of references (or -1)."""
    wanted = {f'"PUT /v2/{repository}/manifests/{reference} ' for reference in references}
    for number, line in enumerate(log.splitlines()):
        if any(prefix in line for prefix in wanted) and '" 201 ' in line:
            return number
    return -1


class TestCopyImage:
    """One image, by tag or by digest."""

    def test_copy_preserves_every_digest(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """The destination serves the same manifest bytes and holds every blob of the image."""
        image = copy_corpus.images["team/app"]["v1"]
        summary = copy_ok(copy_corpus.ref("team/app", "v1"), f"{dst_registry.host}/team/app:v1")
        assert_tags_equal(f"{dst_registry.host}/team/app", {"v1": image.digest})
        for digest in image.blob_digests:
            assert _blob_status(dst_registry, "team/app", digest) == 200, digest
        assert summary["images"] >= 1
        assert summary["blobs_copied"] >= len(image.blob_digests)
        assert summary["bytes_copied"] > 0

    def test_copy_by_digest_to_another_name(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """SRC@digest copied to another repository name lands under that digest."""
        image = copy_corpus.images["team/app"]["v2"]
        copy_ok(f"{copy_corpus.ref('team/app')}@{image.digest}", f"{dst_registry.host}/renamed/app")
        assert_digests_present(f"{dst_registry.host}/renamed/app", (image.digest,))

    def test_skopeo_transport_prefix_is_accepted(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """`docker://` references (skopeo's spelling) copy as the bare ones do, also with -r;
        another transport is refused naming the one accepted."""
        image = copy_corpus.images["team/app"]["v2"]
        copy_ok(f"docker://{copy_corpus.ref('team/app', 'v2')}",
                f"docker://{dst_registry.host}/team/app:v2")  # fmt: skip
        assert_tags_equal(f"{dst_registry.host}/team/app", {"v2": image.digest})
        copy_ok("-r", f"docker://{copy_corpus.ref('team/base-a')}",
                f"docker://{dst_registry.host}/team/base-a")  # fmt: skip
        assert_tags_equal(f"{dst_registry.host}/team/base-a", copy_corpus.tags("team/base-a"))
        run = run_copy("oci:/tmp/layout:v1", f"{dst_registry.host}/team/app:v3")
        assert run.exit_code == 2, str(run)
        assert "docker://" in run.stderr

    def test_copy_to_another_tag(self, copy_corpus: CopyCorpus, dst_registry: Registry) -> None:
        """SRC:tag copied to DST:other-tag tags the same digest with the other tag."""
        image = copy_corpus.images["team/app"]["v2"]
        copy_ok(copy_corpus.ref("team/app", "v2"), f"{dst_registry.host}/team/app:stable")
        assert_tags_equal(f"{dst_registry.host}/team/app", {"stable": image.digest})

    def test_second_copy_transfers_no_blob_bytes(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """Copying again finds everything present: no blob copied, no byte transferred."""
        source, target = copy_corpus.ref("team/multi", "1.0"), f"{dst_registry.host}/team/multi:1.0"
        copy_ok(source, target)
        again = copy_ok(source, target)
        assert (again["blobs_copied"], again["bytes_copied"], again["blobs_mounted"]) == (0, 0, 0)
        assert_tags_equal(f"{dst_registry.host}/team/multi", copy_corpus.tags("team/multi"))

    def test_shared_layers_are_mounted_not_uploaded(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """Base layers already in another repository of the destination are mounted, not sent."""
        first = copy_corpus.images["team/base-a"]["1"]
        second = copy_corpus.images["team/base-b"]["1"]
        shared = set(first.layer_digests) & set(second.layer_digests)
        assert len(shared) == 2
        copy_ok(copy_corpus.ref("team/base-a", "1"), f"{dst_registry.host}/team/base-a:1")
        summary = copy_ok(copy_corpus.ref("team/base-b", "1"), f"{dst_registry.host}/team/base-b:1")
        assert summary["blobs_mounted"] >= len(shared)
        own_blobs = second.blob_digests - shared
        assert summary["blobs_copied"] == len(own_blobs)
        log = dst_registry.log_text()
        for digest in shared:
            assert _blob_status(dst_registry, "team/base-b", digest) == 200
            assert re.search(rf"PUT /v2/team/base-b/blobs/uploads/\S*digest={digest}", log) is None
        assert_tags_equal(f"{dst_registry.host}/team/base-b", {"1": second.digest})

    @pytest.mark.parametrize("repository", ["team/multi", "team/dockerlist"], ids=["oci", "docker"])
    def test_index_arrives_with_both_children(
        self, copy_corpus: CopyCorpus, dst_registry: Registry, repository: str
    ) -> None:
        """A two-platform index (OCI or Docker manifest list) lands with both child manifests."""
        index = copy_corpus.images[repository]["1.0"]
        summary = copy_ok(copy_corpus.ref(repository, "1.0"), f"{dst_registry.host}/{repository}")
        assert_digests_present(f"{dst_registry.host}/{repository}", index.manifest_digests)
        assert_tags_equal(f"{dst_registry.host}/{repository}", {"1.0": index.digest})
        assert summary["manifests"] >= 3

    def test_docker_schema2_image_keeps_its_media_type(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """A Docker schema 2 image is copied byte for byte, not converted to OCI."""
        image = copy_corpus.images["team/docker"]["1.0"]
        copy_ok(copy_corpus.ref("team/docker", "1.0"), f"{dst_registry.host}/team/docker:1.0")
        raw = skopeo.inspect_raw(f"{dst_registry.host}/team/docker:1.0")
        assert json.loads(raw)["mediaType"] == image.media_type
        assert_tags_equal(f"{dst_registry.host}/team/docker", {"1.0": image.digest})


class TestAllTagsAndReferrers:
    """--all-tags, and signatures and referrers that travel with their subject."""

    def test_all_tags_copies_every_tag(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """--all-tags copies every tag of the repository, signature and referrers tags included."""
        summary = copy_ok(
            copy_corpus.ref("team/app"), f"{dst_registry.host}/team/app", "--all-tags"
        )
        expected = copy_corpus.tags("team/app")
        assert skopeo.list_tags(f"{dst_registry.host}/team/app") == sorted(expected)
        assert_tags_equal(f"{dst_registry.host}/team/app", expected)
        assert summary["images"] >= len(expected)

    def test_copy_into_a_new_repository_asks_the_destination_nothing_first(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """--all-tags into a repository the destination does not have sends no manifest or
        blob HEAD for the subjects' copies (one tag list says the repository is absent), and
        every tag arrives with its digest."""
        copy_ok(copy_corpus.ref("team/app"), f"{dst_registry.host}/team/app", "--all-tags")
        assert_tags_equal(f"{dst_registry.host}/team/app", copy_corpus.tags("team/app"))
        subjects = [t for t in copy_corpus.tags("team/app") if not t.startswith("sha256-")]
        log = dst_registry.log_path.read_text()
        asked = re.findall(r'"HEAD /v2/team/app/(manifests|blobs)/(\S+) HTTP', log)
        assert not [ref for kind, ref in asked if kind == "manifests" and ref in subjects]
        assert "GET /v2/team/app/tags/list?n=1 " in log

    def test_repository_holding_only_blobs_is_copied_whole(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """A destination repository left with a blob and no tag (an interrupted copy) answers
        its tag list 404 like an absent one; the copy uploads what it needs and every tag
        arrives with its digest."""
        image = copy_corpus.images["team/app"]["v1"]
        layer = image.layer_digests[0]
        body = httpx.get(f"{copy_corpus.registry.url}/v2/team/app/blobs/{layer}").content
        opened = httpx.post(f"{dst_registry.url}/v2/team/app/blobs/uploads/")
        location = httpx.URL(opened.headers["location"]).copy_merge_params({"digest": layer})
        assert httpx.put(location, content=body).status_code == 201
        assert httpx.get(f"{dst_registry.url}/v2/team/app/tags/list").status_code == 404
        copy_ok(copy_corpus.ref("team/app"), f"{dst_registry.host}/team/app", "--all-tags")
        assert_tags_equal(f"{dst_registry.host}/team/app", copy_corpus.tags("team/app"))

    def test_signature_and_referrer_follow_their_subject(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """Copying a tag brings its cosign .sig tag and its OCI referrer, PUT after the subject."""
        subject = copy_corpus.images["team/app"]["v1"]
        signature, fallback = copy_corpus.signature, copy_corpus.referrers_index
        assert signature.tag is not None
        assert fallback.tag is not None
        copy_ok(copy_corpus.ref("team/app", "v1"), f"{dst_registry.host}/team/app:v1")
        destination = f"{dst_registry.host}/team/app"
        assert_tags_equal(destination, {signature.tag: signature.digest})
        assert_digests_present(destination, (copy_corpus.referrer.digest,))
        log = dst_registry.log_text()
        subject_at = _first_manifest_put(log, "team/app", ("v1", subject.digest))
        signature_at = _first_manifest_put(log, "team/app", (signature.tag, signature.digest))
        referrer_at = _first_manifest_put(
            log, "team/app", (copy_corpus.referrer.digest, fallback.tag, fallback.digest)
        )
        assert 0 <= subject_at < signature_at
        assert subject_at < referrer_at


class TestRecursive:
    """-r copies every repository under a prefix."""

    def test_prefix_copies_its_repositories_and_nothing_else(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """-r SRC/team DST/team copies every team/* repository with all tags, not other/*."""
        summary = copy_ok("-r", copy_corpus.ref("team"), f"{dst_registry.host}/team")
        repositories = copy_corpus.repositories("team")
        assert dst_registry.repositories() == repositories
        for repository in repositories:
            assert_tags_equal(f"{dst_registry.host}/{repository}", copy_corpus.tags(repository))
        assert summary["images"] >= sum(len(copy_corpus.tags(name)) for name in repositories)
        # Each distinct blob crosses the wire once; other repositories mount it.
        assert 0 < summary["bytes_copied"] <= copy_corpus.unique_blob_bytes(repositories)
        assert summary["blobs_mounted"] > 0

    def test_whole_registry(self, copy_corpus: CopyCorpus, dst_registry: Registry) -> None:
        """-r with bare hosts copies every repository of the source."""
        copy_ok("-r", copy_corpus.registry.host, dst_registry.host)
        assert dst_registry.repositories() == copy_corpus.repositories()
        assert_tags_equal(f"{dst_registry.host}/other/outside", copy_corpus.tags("other/outside"))


ALICE = ("alice", "source-secret-1")
BOB = ("bob", "destination-secret-2")


@pytest.fixture
def auth_pair(
    registry_factory: RegistryFactory, copy_corpus: CopyCorpus
) -> tuple[Registry, Registry]:
    """A source requiring alice's password holding team/app:v1, and a destination requiring
    bob's."""
    source = registry_factory(auth=ALICE)
    image = copy_corpus.images["team/app"]["v1"]
    skopeo.push_layout(copy_corpus.layout, "app-v1", f"{source.host}/team/app:v1", creds=ALICE)
    assert skopeo.digest_of(f"{source.host}/team/app:v1", creds=ALICE) == image.digest
    return source, registry_factory(auth=BOB)


class TestAuth:
    """Registries that require Basic auth."""

    def test_creds_flags(
        self, auth_pair: tuple[Registry, Registry], copy_corpus: CopyCorpus
    ) -> None:
        """--src-creds and --dst-creds authenticate to each side."""
        source, destination = auth_pair
        copy_ok(
            f"{source.host}/team/app:v1",
            f"{destination.host}/team/app:v1",
            "--src-creds",
            ":".join(ALICE),
            "--dst-creds",
            ":".join(BOB),
        )
        digest = copy_corpus.images["team/app"]["v1"].digest
        assert_tags_equal(f"{destination.host}/team/app", {"v1": digest}, creds=BOB)

    def test_docker_config_authfile(
        self, auth_pair: tuple[Registry, Registry], copy_corpus: CopyCorpus, tmp_path: Path
    ) -> None:
        """--authfile reads base64 `auth` entries of a Docker config.json for both registries."""
        source, destination = auth_pair
        config = {
            "auths": {
                registry.host: {"auth": base64.b64encode(":".join(creds).encode()).decode()}
                for registry, creds in ((source, ALICE), (destination, BOB))
            }
        }
        authfile = tmp_path / "config.json"
        authfile.write_text(json.dumps(config))
        copy_ok(
            f"{source.host}/team/app:v1",
            f"{destination.host}/team/app:v1",
            "--authfile",
            str(authfile),
        )
        digest = copy_corpus.images["team/app"]["v1"].digest
        assert_tags_equal(f"{destination.host}/team/app", {"v1": digest}, creds=BOB)

    def test_wrong_password_fails_without_leaking_it(
        self, auth_pair: tuple[Registry, Registry]
    ) -> None:
        """A refused password exits 1 with AUTH_FAILED, and the password appears nowhere."""
        source, destination = auth_pair
        wrong = "not-the-password-42"
        run = run_copy(
            f"{source.host}/team/app:v1",
            f"{destination.host}/team/app:v1",
            "--src-creds",
            f"alice:{wrong}",
            "--dst-creds",
            ":".join(BOB),
        )
        assert run.exit_code == 1, str(run)
        assert "AUTH_FAILED" in run.stderr
        assert wrong not in run.stdout + run.stderr
        assert BOB[1] not in run.stdout + run.stderr
        assert destination.repositories() == []


class TestUsage:
    """Bad command lines exit 2 without copying."""

    @pytest.mark.parametrize(
        "args",
        [
            pytest.param(("127.0.0.1:5000/app:v1",), id="missing-destination"),
            pytest.param(("127.0.0.1:5000/App:v1", "127.0.0.1:5001/app:v1"), id="uppercase-repo"),
            pytest.param(
                ("127.0.0.1:5000/app:v1", "127.0.0.1:5001/app", "--concurrency", "x"), id="bad-int"
            ),
            pytest.param(
                ("127.0.0.1:5000/app:v1", "127.0.0.1:5001/app", "--src-creds", "nocolon"),
                id="bad-creds",
            ),
        ],
    )
    def test_bad_usage_exits_2(self, args: tuple[str, ...]) -> None:
        """An invalid command line exits 2 with a message on stderr."""
        run = run_copy(*args)
        assert run.exit_code == 2, str(run)
        assert run.stderr.strip()
