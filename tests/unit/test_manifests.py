"""Parsing manifest bytes into descriptors (replicator/domain/images/manifests.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.domain.images.manifests import (
    MAX_BLOBS,
    MAX_CHILDREN,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    digest_of,
    parse_manifest,
)
from replicator.domain.images.media import ManifestKind, MediaType
from replicator.errors import ManifestError

CORPUS = Path(__file__).resolve().parents[1] / "data" / "manifests"
INVALID = sorted((CORPUS / "invalid").glob("*.json"))


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


CONFIG, LAYER1, LAYER2, LAYER3 = _sha("config"), _sha("layer1"), _sha("layer2"), _sha("layer3")
CHILD_A, CHILD_B, SUBJECT = _sha("child-amd64"), _sha("child-arm64"), _sha("subject")
EMPTY_CONFIG = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
COSIGN_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"


def _load(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def _desc(
    digest: str, size: int = 1, media_type: str = "application/octet-stream"
) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def _image(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_MANIFEST.value,
        "config": _desc(CONFIG),
        "layers": [_desc(LAYER1)],
    }
    doc.update(extra)
    return doc


def _index(children: list[Any], **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_INDEX.value,
        "manifests": children,
    }
    doc.update(extra)
    return doc


def _raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


# file, kind, media type, config digest, layer digests, child digests, subject, artifactType
CORPUS_CASES = [
    ("docker-v2.json", ManifestKind.IMAGE, MediaType.DOCKER_MANIFEST, CONFIG, (LAYER1, LAYER2),
     (), None, None),
    ("docker-list.json", ManifestKind.INDEX, MediaType.DOCKER_MANIFEST_LIST, None, (),
     (CHILD_A, CHILD_B), None, None),
    ("oci-manifest.json", ManifestKind.IMAGE, MediaType.OCI_MANIFEST, CONFIG,
     (LAYER1, LAYER2, LAYER3), (), None, None),
    ("oci-index.json", ManifestKind.INDEX, MediaType.OCI_INDEX, None, (), (CHILD_A, CHILD_B),
     None, None),
    ("oci-artifact.json", ManifestKind.ARTIFACT, MediaType.OCI_ARTIFACT, None, (LAYER1,), (),
     SUBJECT, "application/vnd.example.sbom.v1"),
    ("oci-referrer-subject.json", ManifestKind.IMAGE, MediaType.OCI_MANIFEST, EMPTY_CONFIG,
     (LAYER2,), (), SUBJECT, COSIGN_SIG),
    ("no-mediatype-manifest.json", ManifestKind.IMAGE, MediaType.OCI_MANIFEST, CONFIG, (LAYER2,),
     (), None, None),
    ("no-mediatype-index.json", ManifestKind.INDEX, MediaType.OCI_INDEX, None, (), (CHILD_A,),
     None, None),
    ("index-with-index-child.json", ManifestKind.INDEX, MediaType.OCI_INDEX, None, (),
     (CHILD_A, CHILD_B), None, None),
    ("empty-index.json", ManifestKind.INDEX, MediaType.OCI_INDEX, None, (), (), None, None),
]  # fmt: skip


class TestCorpus:
    """parse_manifest() on the stored corpus of real-shaped manifests."""

    @pytest.mark.parametrize(
        ("name", "kind", "media_type", "config", "layers", "children", "subject", "artifact_type"),
        CORPUS_CASES,
        ids=[case[0].removesuffix(".json") for case in CORPUS_CASES],
    )
    def test_valid(
        self,
        name: str,
        kind: ManifestKind,
        media_type: MediaType,
        config: str | None,
        layers: tuple[str, ...],
        children: tuple[str, ...],
        subject: str | None,
        artifact_type: str | None,
    ) -> None:
        """Each corpus manifest parses to its kind, type, config, layers, children and subject."""
        raw = _load(name)
        manifest = parse_manifest(raw)
        assert manifest.kind is kind
        assert manifest.media_type == media_type.value
        assert (manifest.config.digest if manifest.config else None) == config
        assert tuple(d.digest for d in manifest.layers) == layers
        assert tuple(d.digest for d in manifest.children) == children
        assert (manifest.subject.digest if manifest.subject else None) == subject
        assert manifest.artifact_type == artifact_type
        assert manifest.raw is raw
        assert manifest.digest == "sha256:" + hashlib.sha256(raw).hexdigest()

    @pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
    def test_invalid(self, path: Path) -> None:
        """Each manifest of the invalid corpus raises ManifestError."""
        with pytest.raises(ManifestError):
            parse_manifest(path.read_bytes())

    def test_blobs_are_config_then_layers(self) -> None:
        """`blobs` lists the config first, then the layers in manifest order."""
        manifest = parse_manifest(_load("oci-manifest.json"))
        assert [b.digest for b in manifest.blobs] == [CONFIG, LAYER1, LAYER2, LAYER3]

    def test_index_has_no_blobs(self) -> None:
        """An index needs no blobs of its own."""
        assert parse_manifest(_load("oci-index.json")).blobs == ()

    def test_descriptor_fields(self) -> None:
        """Descriptors keep media type, digest, size and a platform string with the variant."""
        manifest = parse_manifest(_load("docker-list.json"))
        assert manifest.children == (
            Descriptor(MediaType.DOCKER_MANIFEST.value, CHILD_A, 528, platform="linux/amd64"),
            Descriptor(MediaType.DOCKER_MANIFEST.value, CHILD_B, 528, platform="linux/arm64/v8"),
        )

    def test_zero_size_layer(self) -> None:
        """A layer of size 0 is a valid descriptor."""
        assert parse_manifest(_load("oci-manifest.json")).layers[2].size == 0


MEDIA_TYPE_CASES = [
    # body mediaType, Content-Type, shape -> kind, stored media type
    ("body-wins", MediaType.OCI_INDEX.value, MediaType.DOCKER_MANIFEST.value, "index",
     ManifestKind.INDEX, MediaType.OCI_INDEX.value),
    ("content-type-oci", None, MediaType.OCI_MANIFEST.value, "image", ManifestKind.IMAGE,
     MediaType.OCI_MANIFEST.value),
    ("content-type-docker", None, MediaType.DOCKER_MANIFEST.value, "image", ManifestKind.IMAGE,
     MediaType.DOCKER_MANIFEST.value),
    ("content-type-list", None, MediaType.DOCKER_MANIFEST_LIST.value, "index",
     ManifestKind.INDEX, MediaType.DOCKER_MANIFEST_LIST.value),
    ("content-type-artifact", None, MediaType.OCI_ARTIFACT.value, "artifact",
     ManifestKind.ARTIFACT, MediaType.OCI_ARTIFACT.value),
    ("content-type-charset", None, f"{MediaType.OCI_MANIFEST.value}; charset=utf-8", "image",
     ManifestKind.IMAGE, f"{MediaType.OCI_MANIFEST.value}; charset=utf-8"),
    ("empty-body-type", "", MediaType.OCI_MANIFEST.value, "image", ManifestKind.IMAGE,
     MediaType.OCI_MANIFEST.value),
    ("shape-image", None, None, "image", ManifestKind.IMAGE, MediaType.OCI_MANIFEST.value),
    ("shape-index", None, None, "index", ManifestKind.INDEX, MediaType.OCI_INDEX.value),
    ("json-content-type-image", None, "application/json", "image", ManifestKind.IMAGE,
     MediaType.OCI_MANIFEST.value),
    ("json-content-type-index", None, "application/json", "index", ManifestKind.INDEX,
     MediaType.OCI_INDEX.value),
]  # fmt: skip


def _shaped(shape: str, body_type: str | None) -> dict[str, Any]:
    if shape == "index":
        doc: dict[str, Any] = {"schemaVersion": 2, "manifests": [_desc(CHILD_A)]}
    elif shape == "artifact":
        doc = {"blobs": [_desc(LAYER1)]}
    else:
        doc = {"schemaVersion": 2, "config": _desc(CONFIG), "layers": [_desc(LAYER1)]}
    if body_type is not None:
        doc["mediaType"] = body_type
    return doc


class TestMediaTypeFallback:
    """Body mediaType first, then Content-Type, then the document's shape."""

    @pytest.mark.parametrize(
        ("body_type", "content_type", "shape", "kind", "stored"),
        [case[1:] for case in MEDIA_TYPE_CASES],
        ids=[case[0] for case in MEDIA_TYPE_CASES],
    )
    def test_fallback(
        self,
        body_type: str | None,
        content_type: str | None,
        shape: str,
        kind: ManifestKind,
        stored: str,
    ) -> None:
        """The kind and the media type a PUT will declare come from the first source that knows."""
        manifest = parse_manifest(_raw(_shaped(shape, body_type)), content_type)
        assert manifest.kind is kind
        assert manifest.media_type == stored

    @pytest.mark.parametrize(
        ("doc", "content_type"),
        [
            (_shaped("image", "application/vnd.example.unknown+json"), None),
            (_shaped("index", "application/json"), MediaType.OCI_INDEX.value),
            ({"schemaVersion": 1, "config": _desc(CONFIG)}, None),
            ({"schemaVersion": 2, "layers": [_desc(LAYER1)]}, None),
            ({"blobs": [_desc(LAYER1)]}, "application/json"),
            ({}, None),
            ({"config": _desc(CONFIG), "layers": []}, "text/html"),
        ],
        ids=["unknown-body-type", "unknown-body-type-beats-content-type", "schema-1-shape",
             "no-config-no-manifests", "artifact-shape-unknown", "empty-object",
             "html-image-without-schema"],
    )  # fmt: skip
    def test_unsupported(self, doc: dict[str, Any], content_type: str | None) -> None:
        """A manifest whose type is unknown and whose shape does not tell is refused."""
        with pytest.raises(ManifestError, match="unsupported manifest media type"):
            parse_manifest(_raw(doc), content_type)


BAD_DOCUMENTS = [
    ("empty", b"", "not valid JSON"),
    ("not-json", b"hello", "not valid JSON"),
    ("bad-utf8", b'{"a": "\xff"}', "not valid JSON"),
    ("deeply-nested", b"[" * 100_000, "not valid JSON"),
    ("huge-integer", b"1" * 5000, "not valid JSON"),
    ("array", b"[]", "not an object"),
    ("null", b"null", "not an object"),
    ("number", b"42", "not an object"),
    ("string", b'"manifest"', "not an object"),
    ("config-not-object", _raw(_image(config=[CONFIG])), "config is not a descriptor"),
    ("config-null", _raw(_image(config=None)), "config is not a descriptor"),
    ("digest-missing", _raw(_image(config={"size": 1})), r"config\.digest is missing"),
    ("digest-number", _raw(_image(config={"digest": 1, "size": 1})), r"config\.digest"),
    ("digest-short", _raw(_image(layers=[_desc("sha256:abc")])), r"layers\[0\]\.digest"),
    ("digest-md5", _raw(_image(layers=[_desc("md5:" + "a" * 32)])), r"layers\[0\]\.digest"),
    ("size-missing", _raw(_image(config={"digest": CONFIG})), r"config\.size"),
    ("size-negative", _raw(_image(config=_desc(CONFIG, -1))), r"config\.size"),
    ("size-bool", _raw(_image(config={"digest": CONFIG, "size": True})), r"config\.size"),
    ("size-float", _raw(_image(config={"digest": CONFIG, "size": 1.5})), r"config\.size"),
    ("size-string", _raw(_image(config={"digest": CONFIG, "size": "1"})), r"config\.size"),
    ("media-type-number", _raw(_image(config={"digest": CONFIG, "size": 1, "mediaType": 3})),
     r"config\.mediaType"),
    ("layers-object", _raw(_image(layers={"a": 1})), "layers is not a list"),
    ("layer-string", _raw(_image(layers=[LAYER1])), r"layers\[0\] is not a descriptor"),
    ("second-layer-bad", _raw(_image(layers=[_desc(LAYER1), {}])), r"layers\[1\]\.digest"),
    ("manifests-string", _raw(_index("abc")), "manifests is not a list"),  # type: ignore[arg-type]
    ("child-null", _raw(_index([None])), r"manifests\[0\] is not a descriptor"),
    ("subject-bad-digest", _raw(_image(subject=_desc("sha256:00"))), r"subject\.digest"),
]  # fmt: skip


class TestInvalid:
    """Malformed documents raise ManifestError naming what was wrong."""

    @pytest.mark.parametrize(
        ("raw", "message"),
        [case[1:] for case in BAD_DOCUMENTS],
        ids=[case[0] for case in BAD_DOCUMENTS],
    )
    def test_invalid(self, raw: bytes, message: str) -> None:
        """A malformed manifest raises ManifestError with a message naming the problem."""
        with pytest.raises(ManifestError, match=message):
            parse_manifest(raw)

    def test_subject_not_object_is_ignored(self) -> None:
        """A subject that is not an object is ignored rather than refused (as registries do)."""
        assert parse_manifest(_raw(_image(subject="nope"))).subject is None

    def test_platform_not_object_is_ignored(self) -> None:
        """A child platform that is not an object leaves the platform unknown."""
        child = {**_desc(CHILD_A), "platform": "linux/amd64"}
        assert parse_manifest(_raw(_index([child]))).children[0].platform is None


class TestLimits:
    """Size, child and blob caps bound memory and work."""

    def test_over_size_cap(self) -> None:
        """A manifest over MAX_MANIFEST_BYTES is refused before it is parsed."""
        with pytest.raises(ManifestError, match=str(MAX_MANIFEST_BYTES)):
            parse_manifest(b" " * (MAX_MANIFEST_BYTES + 1))

    def test_at_size_cap(self) -> None:
        """A manifest of exactly MAX_MANIFEST_BYTES is accepted."""
        body = _raw(_image())
        raw = body + b" " * (MAX_MANIFEST_BYTES - len(body))
        assert parse_manifest(raw).kind is ManifestKind.IMAGE

    @pytest.mark.parametrize(
        ("count", "accepted"),
        [(MAX_CHILDREN, True), (MAX_CHILDREN + 1, False)],
        ids=["at-limit", "over-limit"],
    )
    def test_children_cap(self, count: int, accepted: bool) -> None:
        """An index may list MAX_CHILDREN children and no more."""
        raw = _raw(_index([_desc(CHILD_A)] * count))
        if accepted:
            assert len(parse_manifest(raw).children) == count
        else:
            with pytest.raises(ManifestError, match=f"manifests has {count} entries"):
                parse_manifest(raw)

    @pytest.mark.parametrize(
        ("count", "accepted"),
        [(MAX_BLOBS, True), (MAX_BLOBS + 1, False)],
        ids=["at-limit", "over-limit"],
    )
    def test_layers_cap(self, count: int, accepted: bool) -> None:
        """An image may list MAX_BLOBS layers and no more."""
        raw = _raw(_image(layers=[_desc(LAYER1)] * count))
        if accepted:
            assert len(parse_manifest(raw).layers) == count
        else:
            with pytest.raises(ManifestError, match=f"layers has {count} entries"):
                parse_manifest(raw)


class TestDigest:
    """The manifest's digest and the requested digest."""

    def test_digest_of(self) -> None:
        """digest_of() is the sha256 of the bytes, as a registry computes it."""
        assert digest_of(b"") == (
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )

    def test_requested_digest_matches(self) -> None:
        """Bytes that hash to the requested digest parse."""
        raw = _load("oci-index.json")
        assert parse_manifest(raw, digest=digest_of(raw)).digest == digest_of(raw)

    def test_requested_sha512_matches(self) -> None:
        """A manifest requested by a sha512 digest is checked with sha512."""
        raw = _load("oci-index.json")
        requested = "sha512:" + hashlib.sha512(raw).hexdigest()
        assert parse_manifest(raw, digest=requested).digest == digest_of(raw)

    @pytest.mark.parametrize(
        "requested",
        [_sha("something else"), "sha512:" + "0" * 128],
        ids=["sha256", "sha512"],
    )
    def test_requested_digest_mismatch(self, requested: str) -> None:
        """Bytes that do not hash to the requested digest are refused, naming both digests."""
        raw = _load("oci-manifest.json")
        with pytest.raises(ManifestError, match=requested) as info:
            parse_manifest(raw, digest=requested)
        assert digest_of(raw) in str(info.value)

    def test_mismatch_checked_before_json(self) -> None:
        """A digest mismatch is reported even when the bytes are not JSON."""
        with pytest.raises(ManifestError, match="not the requested"):
            parse_manifest(b"garbage", digest=_sha("x"))

    def test_whitespace_changes_the_digest(self) -> None:
        """The raw bytes, not a re-serialisation, define the digest."""
        raw = _load("oci-manifest.json")
        assert parse_manifest(raw + b"\n").digest != parse_manifest(raw).digest


class TestSelfReference:
    """A manifest naming itself cannot be built (it would need a sha256 fixpoint).

    The guard in parse_manifest is defence in depth; what is testable is that manifests naming
    other manifests, including one another's digests, are not mistaken for self-references.
    """

    def test_index_of_a_parsed_manifest(self) -> None:
        """An index listing the digest of a real manifest parses with that child."""
        child = parse_manifest(_load("oci-manifest.json"))
        index = parse_manifest(_raw(_index([_desc(child.digest, len(child.raw))])))
        assert index.children[0].digest == child.digest != index.digest

    def test_referrer_of_a_parsed_manifest(self) -> None:
        """A referrer whose subject is another manifest's digest parses with that subject."""
        subject = parse_manifest(_load("oci-index.json"))
        referrer = parse_manifest(_raw(_image(subject=_desc(subject.digest))))
        assert referrer.subject is not None
        assert referrer.subject.digest == subject.digest != referrer.digest


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
# Wrong-typed values for manifest fields: small, so each example stays cheap.
_ODD = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
)
_DIGESTS = st.sampled_from([CONFIG, LAYER1, "sha256:12", "md5:" + "a" * 32, ""]) | st.text()
_DESCRIPTOR = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": st.sampled_from([m.value for m in MediaType]) | _ODD,
        "digest": _DIGESTS,
        "size": st.integers(min_value=-2, max_value=2**70) | _ODD,
        "platform": st.fixed_dictionaries({}, optional={"os": _ODD, "architecture": _ODD}) | _ODD,
        "artifactType": _ODD,
    },
)
_MANIFEST_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.sampled_from([1, 2]) | _ODD,
        "mediaType": st.sampled_from([m.value for m in MediaType]) | _ODD,
        "config": _DESCRIPTOR | _ODD,
        "layers": st.lists(_DESCRIPTOR | _ODD, max_size=3) | _ODD,
        "blobs": st.lists(_DESCRIPTOR | _ODD, max_size=3) | _ODD,
        "manifests": st.lists(_DESCRIPTOR | _ODD, max_size=3) | _ODD,
        "subject": _DESCRIPTOR | _ODD,
        "artifactType": _ODD,
    },
)
_CONTENT_TYPES = st.none() | st.sampled_from([m.value for m in MediaType]) | st.text(max_size=30)


def _parses_or_refuses(raw: bytes, content_type: str | None) -> None:
    try:
        manifest = parse_manifest(raw, content_type)
    except ManifestError:
        return
    assert isinstance(manifest, Manifest)
    assert manifest.raw == raw
    assert manifest.kind in ManifestKind


# No deadline: on a loaded 2-core CI machine a large generated example can take > 200 ms.
_FUZZ = settings(deadline=None)


class TestFuzz:
    """parse_manifest() returns a Manifest or raises ManifestError, never anything else."""

    @_FUZZ
    @given(st.binary(max_size=512), _CONTENT_TYPES)
    def test_arbitrary_bytes(self, raw: bytes, content_type: str | None) -> None:
        """Arbitrary bytes parse or raise ManifestError."""
        _parses_or_refuses(raw, content_type)

    @_FUZZ
    @given(_JSON, _CONTENT_TYPES)
    def test_arbitrary_json(self, doc: object, content_type: str | None) -> None:
        """Arbitrary JSON values parse or raise ManifestError."""
        _parses_or_refuses(json.dumps(doc).encode(), content_type)

    @_FUZZ
    @given(_MANIFEST_LIKE, _CONTENT_TYPES)
    def test_manifest_shaped_json(self, doc: dict[str, Any], content_type: str | None) -> None:
        """JSON objects with manifest keys and odd values parse or raise ManifestError."""
        _parses_or_refuses(json.dumps(doc).encode(), content_type)
