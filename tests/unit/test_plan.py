"""Copy planning from source and destination facts (replicator/domain/transfers/plan.py)."""

from __future__ import annotations

import hashlib
import json

import pytest

from replicator.domain.images.manifests import Manifest, parse_manifest
from replicator.domain.images.media import MediaType
from replicator.domain.transfers.plan import (
    BlobAction,
    BlobStep,
    CopyPlan,
    DestinationFacts,
    Shortcut,
    blobs_to_check,
    dependency_order,
    plan_copy,
    quick_check,
    referrer_tags,
    unreadable_is_absent,
)


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


CONFIG_A, CONFIG_B = _sha("config-a"), _sha("config-b")
BASE, LAYER_A, LAYER_B = _sha("base"), _sha("layer-a"), _sha("layer-b")
SIZES = {CONFIG_A: 10, CONFIG_B: 11, BASE: 1000, LAYER_A: 200, LAYER_B: 300}


def _image(config: str, *layers: str) -> Manifest:
    doc = {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_MANIFEST.value,
        "config": {"mediaType": "c", "digest": config, "size": SIZES.get(config, 1)},
        "layers": [{"mediaType": "l", "digest": d, "size": SIZES.get(d, 1)} for d in layers],
    }
    return parse_manifest(json.dumps(doc).encode())


def _index(*children: Manifest) -> Manifest:
    doc = {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_INDEX.value,
        "manifests": [
            {"mediaType": c.media_type, "digest": c.digest, "size": len(c.raw)} for c in children
        ],
    }
    return parse_manifest(json.dumps(doc).encode())


IMAGE_A = _image(CONFIG_A, BASE, LAYER_A)
IMAGE_B = _image(CONFIG_B, BASE, LAYER_B)
INDEX = _index(IMAGE_A, IMAGE_B)
CHILDREN = {IMAGE_A.digest: IMAGE_A, IMAGE_B.digest: IMAGE_B}


def _digests(plan: CopyPlan) -> list[str]:
    return [m.digest for m in plan.manifests]


def _actions(plan: CopyPlan) -> dict[str, BlobAction]:
    return {step.descriptor.digest: step.action for step in plan.blobs}


class TestQuickCheck:
    """quick_check(): the no-op path decided on digests alone."""

    @pytest.mark.parametrize(
        ("tag", "dest_tag_digest", "dest_has_digest", "expected"),
        [
            ("v1", "sha256:src", True, Shortcut.UP_TO_DATE),
            ("v1", "sha256:src", False, Shortcut.UP_TO_DATE),
            ("v1", "sha256:other", True, Shortcut.TAG_ONLY),
            ("v1", None, True, Shortcut.TAG_ONLY),
            ("v1", "sha256:other", False, Shortcut.FULL),
            ("v1", None, False, Shortcut.FULL),
            (None, None, True, Shortcut.UP_TO_DATE),
            (None, None, False, Shortcut.FULL),
            (None, "sha256:src", False, Shortcut.FULL),
        ],
        ids=["tag-matches", "tag-matches-no-head", "tag-moved", "tag-missing", "tag-moved-absent",
             "nothing", "untagged-present", "untagged-absent", "untagged-ignores-tag-digest"],
    )  # fmt: skip
    def test_quick_check(
        self,
        tag: str | None,
        dest_tag_digest: str | None,
        dest_has_digest: bool,
        expected: Shortcut,
    ) -> None:
        """Digests at the destination decide between up to date, tag only and a full plan."""
        result = quick_check(
            source_digest="sha256:src",
            tag=tag,
            dest_tag_digest=dest_tag_digest,
            dest_has_digest=dest_has_digest,
        )
        assert result is expected


class TestPlanCopyImage:
    """plan_copy() for a single image manifest."""

    def test_nothing_at_destination(self) -> None:
        """Every blob is copied, config first, and the manifest is the last step, under the tag."""
        plan = plan_copy(IMAGE_A, {}, DestinationFacts(), tag="v1")
        assert [(s.descriptor.digest, s.action) for s in plan.blobs] == [
            (CONFIG_A, BlobAction.COPY),
            (BASE, BlobAction.COPY),
            (LAYER_A, BlobAction.COPY),
        ]
        assert plan.manifests == (IMAGE_A,)
        assert plan.tag == "v1"
        assert plan.root is IMAGE_A
        assert plan.bytes_to_copy == SIZES[CONFIG_A] + SIZES[BASE] + SIZES[LAYER_A]

    def test_everything_present_untagged(self) -> None:
        """A manifest already there, copied by digest, needs no blob and no manifest step."""
        dest = DestinationFacts(
            manifests_present=frozenset({IMAGE_A.digest}), blobs_present=frozenset(SIZES)
        )
        plan = plan_copy(IMAGE_A, {}, dest, tag=None)
        assert plan.blobs == ()
        assert plan.manifests == ()
        assert plan.bytes_to_copy == 0

    def test_tag_only(self) -> None:
        """A manifest there by digest but not under the tag: no blobs, only the root PUT."""
        dest = DestinationFacts(manifests_present=frozenset({IMAGE_A.digest}))
        plan = plan_copy(IMAGE_A, {}, dest, tag="v2")
        assert plan.blobs == ()
        assert plan.manifests == (IMAGE_A,)
        assert plan.tag == "v2"

    def test_untagged_copy_puts_root_by_digest(self) -> None:
        """An untagged copy of a missing manifest PUTs the root with no tag."""
        plan = plan_copy(IMAGE_A, {}, DestinationFacts(), tag=None)
        assert plan.manifests == (IMAGE_A,)
        assert plan.tag is None

    @pytest.mark.parametrize(
        ("present", "mountable", "expected"),
        [
            (frozenset({BASE}), {}, {CONFIG_A: "copy", BASE: "skip", LAYER_A: "copy"}),
            (frozenset(), {BASE: "other/repo"}, {CONFIG_A: "copy", BASE: "mount",
                                                  LAYER_A: "copy"}),
            (frozenset({BASE}), {BASE: "other/repo"}, {CONFIG_A: "copy", BASE: "skip",
                                                       LAYER_A: "copy"}),
            (frozenset({CONFIG_A, BASE, LAYER_A}), {}, {CONFIG_A: "skip", BASE: "skip",
                                                        LAYER_A: "skip"}),
            (frozenset(), {CONFIG_A: "a", LAYER_A: "b"}, {CONFIG_A: "mount", BASE: "copy",
                                                          LAYER_A: "mount"}),
        ],
        ids=["present-skipped", "mountable-mounted", "present-beats-mountable", "all-present",
             "two-mounts"],
    )  # fmt: skip
    def test_blob_actions(
        self, present: frozenset[str], mountable: dict[str, str], expected: dict[str, str]
    ) -> None:
        """Present blobs are skipped, blobs held in another repository mounted, the rest copied."""
        plan = plan_copy(
            IMAGE_A, {}, DestinationFacts(blobs_present=present, mountable=mountable), tag="v1"
        )
        assert {d: a.value for d, a in _actions(plan).items()} == expected
        assert plan.manifests == (IMAGE_A,)

    def test_mount_names_its_source_repository(self) -> None:
        """A MOUNT step carries the repository to mount from; other steps carry none."""
        dest = DestinationFacts(mountable={BASE: "team/base"})
        plan = plan_copy(IMAGE_A, {}, dest, tag="v1")
        assert BlobStep(plan.blobs[1].descriptor, BlobAction.MOUNT, "team/base") in plan.blobs
        assert all(s.mount_from is None for s in plan.blobs if s.action is not BlobAction.MOUNT)

    def test_counts_and_bytes(self) -> None:
        """count() and bytes_to_copy add up the plan's steps by action."""
        dest = DestinationFacts(blobs_present=frozenset({CONFIG_A}), mountable={BASE: "x"})
        plan = plan_copy(IMAGE_A, {}, dest, tag="v1")
        assert (plan.count(BlobAction.SKIP), plan.count(BlobAction.MOUNT)) == (1, 1)
        assert plan.count(BlobAction.COPY) == 1
        assert plan.bytes_to_copy == SIZES[LAYER_A]


class TestPlanCopyIndex:
    """plan_copy() for an index and its children."""

    def test_nothing_at_destination(self) -> None:
        """Shared blobs appear once; children come before the index, which is last under the tag."""
        plan = plan_copy(INDEX, CHILDREN, DestinationFacts(), tag="v1")
        assert [s.descriptor.digest for s in plan.blobs] == [
            CONFIG_A,
            BASE,
            LAYER_A,
            CONFIG_B,
            LAYER_B,
        ]
        assert _digests(plan) == [IMAGE_A.digest, IMAGE_B.digest, INDEX.digest]
        assert plan.tag == "v1"

    def test_one_child_present(self) -> None:
        """With one child at the destination only the other child's blobs and manifest move."""
        dest = DestinationFacts(manifests_present=frozenset({IMAGE_A.digest}))
        plan = plan_copy(INDEX, CHILDREN, dest, tag="v1")
        assert [s.descriptor.digest for s in plan.blobs] == [CONFIG_B, BASE, LAYER_B]
        assert _digests(plan) == [IMAGE_B.digest, INDEX.digest]

    def test_children_present_index_missing(self) -> None:
        """With every child present only the index is PUT, and no blob moves."""
        dest = DestinationFacts(manifests_present=frozenset(CHILDREN))
        plan = plan_copy(INDEX, CHILDREN, dest, tag="v1")
        assert plan.blobs == ()
        assert _digests(plan) == [INDEX.digest]

    def test_everything_present_tag_only(self) -> None:
        """With the whole tree present, a tagged copy re-PUTs only the index under the tag."""
        dest = DestinationFacts(manifests_present=frozenset({*CHILDREN, INDEX.digest}))
        plan = plan_copy(INDEX, CHILDREN, dest, tag="v1")
        assert plan.blobs == ()
        assert _digests(plan) == [INDEX.digest]

    def test_everything_present_untagged(self) -> None:
        """With the whole tree present, an untagged copy has nothing to do."""
        dest = DestinationFacts(manifests_present=frozenset({*CHILDREN, INDEX.digest}))
        plan = plan_copy(INDEX, CHILDREN, dest, tag=None)
        assert plan.blobs == ()
        assert plan.manifests == ()

    def test_shared_blob_planned_once_with_one_action(self) -> None:
        """A blob shared by two children gets one step, mounted when the destination has it."""
        plan = plan_copy(INDEX, CHILDREN, DestinationFacts(mountable={BASE: "base"}), tag=None)
        base_steps = [s for s in plan.blobs if s.descriptor.digest == BASE]
        assert base_steps == [BlobStep(base_steps[0].descriptor, BlobAction.MOUNT, "base")]

    def test_nested_index(self) -> None:
        """In an index of indexes: grandchildren first, then the inner index, the root last."""
        image_c = _image(CONFIG_A, LAYER_B)
        inner = _index(IMAGE_A, IMAGE_B)
        outer = _index(inner, image_c)
        tree = {**CHILDREN, inner.digest: inner, image_c.digest: image_c}
        plan = plan_copy(outer, tree, DestinationFacts(), tag="v1")
        assert _digests(plan) == [
            IMAGE_A.digest,
            IMAGE_B.digest,
            inner.digest,
            image_c.digest,
            outer.digest,
        ]
        assert len(plan.blobs) == len({CONFIG_A, BASE, LAYER_A, CONFIG_B, LAYER_B})


class TestDependencyOrder:
    """dependency_order(): each manifest once, after its children."""

    def test_single_image(self) -> None:
        """An image is its own whole tree."""
        assert dependency_order(IMAGE_A, {}) == (IMAGE_A,)

    def test_index(self) -> None:
        """Children come in index order, then the index."""
        assert dependency_order(INDEX, CHILDREN) == (IMAGE_A, IMAGE_B, INDEX)

    def test_nested_and_shared(self) -> None:
        """A child listed by two inner indexes appears once, before both."""
        inner_1 = _index(IMAGE_A)
        inner_2 = _index(IMAGE_A, IMAGE_B)
        outer = _index(inner_1, inner_2)
        tree = {**CHILDREN, inner_1.digest: inner_1, inner_2.digest: inner_2}
        order = dependency_order(outer, tree)
        assert order == (IMAGE_A, inner_1, IMAGE_B, inner_2, outer)
        position = {m.digest: i for i, m in enumerate(order)}
        for manifest in order:
            for child in manifest.children:
                assert position[child.digest] < position[manifest.digest]

    def test_unknown_child_is_left_out(self) -> None:
        """A child whose manifest was not gathered is not invented."""
        assert dependency_order(INDEX, {IMAGE_B.digest: IMAGE_B}) == (IMAGE_B, INDEX)


class TestBlobsToCheck:
    """blobs_to_check(): which blobs deserve a HEAD at the destination."""

    @pytest.mark.parametrize(
        ("present", "expected"),
        [
            (frozenset(), (CONFIG_A, BASE, LAYER_A, CONFIG_B, LAYER_B)),
            (frozenset({IMAGE_A.digest}), (CONFIG_B, BASE, LAYER_B)),
            (frozenset({IMAGE_A.digest, IMAGE_B.digest}), ()),
            (frozenset({INDEX.digest}), (CONFIG_A, BASE, LAYER_A, CONFIG_B, LAYER_B)),
        ],
        ids=["none-present", "one-child-present", "children-present", "only-index-present"],
    )
    def test_blobs_to_check(self, present: frozenset[str], expected: tuple[str, ...]) -> None:
        """Blobs of manifests the destination holds are not checked; shared blobs appear once."""
        assert blobs_to_check(INDEX, CHILDREN, present) == expected


SUBJECT = "sha256:" + "ab" * 32
BASE_TAG = "sha256-" + "ab" * 32


class TestReferrerTags:
    """referrer_tags(): the OCI fallback tag and cosign's tags for a subject."""

    @pytest.mark.parametrize(
        ("tags", "expected"),
        [
            ([BASE_TAG], (BASE_TAG,)),
            ([f"{BASE_TAG}.sig", f"{BASE_TAG}.att", f"{BASE_TAG}.sbom"],
             (f"{BASE_TAG}.sig", f"{BASE_TAG}.att", f"{BASE_TAG}.sbom")),
            (["v1", "latest", f"{BASE_TAG}.sig"], (f"{BASE_TAG}.sig",)),
            (["sha256-" + "cd" * 32 + ".sig"], ()),
            ([f"{BASE_TAG}.other", f"{BASE_TAG}sig", BASE_TAG[:-1]], ()),
            ([], ()),
        ],
        ids=["fallback-tag", "cosign-tags", "among-others", "other-subject", "near-misses",
             "no-tags"],
    )  # fmt: skip
    def test_referrer_tags(self, tags: list[str], expected: tuple[str, ...]) -> None:
        """Only the subject's own referrer tags are picked, in listing order."""
        assert referrer_tags(tags, SUBJECT) == expected


FOREIGN = _sha("windows-base")


def _windows_image(foreign_type: str) -> Manifest:
    doc = {
        "schemaVersion": 2,
        "mediaType": MediaType.DOCKER_MANIFEST.value,
        "config": {"mediaType": "c", "digest": CONFIG_A, "size": 10},
        "layers": [
            {"mediaType": foreign_type, "digest": FOREIGN, "size": 5000,
             "urls": ["https://mcr.microsoft.com/v2/windows/blobs/" + FOREIGN]},
            {"mediaType": "l", "digest": LAYER_A, "size": 200},
        ],
    }  # fmt: skip
    return parse_manifest(json.dumps(doc).encode())


class TestForeignLayers:
    """Non-distributable layers stay where their urls point unless asked for."""

    @pytest.mark.parametrize(
        "media_type",
        [
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        ],
    )
    def test_foreign_layer_is_left_out_by_default(self, media_type: str) -> None:
        """The plan copies the config and the ordinary layer, not the foreign one, and still
        PUTs the manifest (which names it) as it is; nothing HEADs the foreign blob."""
        image = _windows_image(media_type)
        plan = plan_copy(image, {}, DestinationFacts(), tag="v1")
        assert _actions(plan) == {CONFIG_A: BlobAction.COPY, LAYER_A: BlobAction.COPY}
        assert _digests(plan) == [image.digest]
        assert FOREIGN not in blobs_to_check(image, {}, frozenset())

    def test_foreign_layer_is_copied_when_allowed(self) -> None:
        """With foreign_layers, the foreign blob is checked and copied like any other."""
        image = _windows_image("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
        plan = plan_copy(image, {}, DestinationFacts(), tag="v1", foreign_layers=True)
        assert _actions(plan)[FOREIGN] is BlobAction.COPY
        assert FOREIGN in blobs_to_check(image, {}, frozenset(), foreign_layers=True)


@pytest.mark.parametrize(
    ("status", "absent"),
    [(500, True), (503, True), (None, False), (404, False), (401, False), (429, False)],
    ids=["500", "503", "no-answer", "404", "401", "429"],
)
def test_unreadable_is_absent(status: int | None, absent: bool) -> None:
    """A destination manifest HEAD failing with a 5xx (a link file left empty) is planned as
    "not there", so the PUT that follows rewrites it; no answer, or a 4xx, stays the error."""
    assert unreadable_is_absent(status) is absent
