"""The referrers tag schema index: entries and merging (replicator/domain/images/referrers.py)."""

from __future__ import annotations

import json

import pytest

from replicator.domain.images.manifests import parse_manifest
from replicator.domain.images.media import MediaType
from replicator.domain.images.referrers import (
    fallback_tag,
    listed_entry,
    merge_referrers,
    referrer_entry,
)

SUBJECT = "sha256:" + "a" * 64
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": EMPTY_DIGEST}


def _referrer(name: str, *, artifact_type: str | None = "application/spdx+json") -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_MANIFEST.value,
        "config": EMPTY,
        "layers": [],
        "subject": {"mediaType": MediaType.OCI_MANIFEST.value, "digest": SUBJECT, "size": 9},
        "annotations": {"name": name},
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    return json.dumps(doc).encode()


A = referrer_entry(parse_manifest(_referrer("a")))
B = referrer_entry(parse_manifest(_referrer("b")))


def _digests(index: bytes | None) -> list[str]:
    assert index is not None
    return [entry["digest"] for entry in json.loads(index)["manifests"]]


class TestEntry:
    """What the index lists for one referrer."""

    def test_entry_carries_artifact_type_and_annotations(self) -> None:
        """artifactType and annotations come from the referrer; size is its byte length."""
        raw = _referrer("a")
        entry = referrer_entry(parse_manifest(raw))
        assert entry["size"] == len(raw)
        assert entry["artifactType"] == "application/spdx+json"
        assert entry["annotations"] == {"name": "a"}

    def test_config_media_type_stands_in_for_artifact_type(self) -> None:
        """Without artifactType, the config's media type is the entry's artifactType."""
        entry = referrer_entry(parse_manifest(_referrer("c", artifact_type=None)))
        assert entry["artifactType"] == EMPTY["mediaType"]

    def test_listed_entry_from_an_api_descriptor(self) -> None:
        """A referrer known by its API descriptor is listed with type, digest, size and
        artifactType; merged after an entry of the same digest, the richer entry stays."""
        referrer = parse_manifest(_referrer("a"))
        index = parse_manifest(
            json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX.value,
                        "manifests": [A]}).encode()
        )  # fmt: skip
        entry = listed_entry(index.children[0])
        assert entry == {
            "mediaType": MediaType.OCI_MANIFEST.value,
            "digest": referrer.digest,
            "size": len(referrer.raw),
            "artifactType": "application/spdx+json",
        }
        current = json.dumps({"schemaVersion": 2, "manifests": [A]}).encode()
        assert merge_referrers(current, [entry]) is None

    def test_fallback_tag(self) -> None:
        """`sha256:<hex>` becomes the tag `sha256-<hex>`."""
        assert fallback_tag(SUBJECT) == "sha256-" + "a" * 64


class TestMerge:
    """merge_referrers(): add, never overwrite."""

    @pytest.mark.parametrize(
        ("existing", "entries", "expected"),
        [
            (None, [A], [A["digest"]]),
            ([A], [B], [A["digest"], B["digest"]]),
            ([B], [A, B], [B["digest"], A["digest"]]),
        ],
        ids=["new-index", "appended", "known-kept-in-place"],
    )
    def test_merge(
        self, existing: list[dict[str, object]] | None, entries: list[dict[str, object]],
        expected: list[str],
    ) -> None:  # fmt: skip
        """New entries are appended after those listed; listed ones keep their place."""
        current = None
        if existing is not None:
            current = json.dumps({"schemaVersion": 2, "manifests": existing}).encode()
        merged = merge_referrers(current, entries)
        assert _digests(merged) == expected
        assert parse_manifest(merged or b"").media_type == MediaType.OCI_INDEX.value

    def test_nothing_to_write_when_all_are_listed(self) -> None:
        """An index already listing every entry is left as it is (no PUT)."""
        current = json.dumps({"schemaVersion": 2, "manifests": [A, B]}).encode()
        assert merge_referrers(current, [B]) is None

    def test_other_index_fields_kept(self) -> None:
        """Annotations of the existing index survive the merge."""
        current = json.dumps(
            {"schemaVersion": 2, "manifests": [A], "annotations": {"owner": "oras"}}
        ).encode()
        merged = merge_referrers(current, [B])
        assert merged is not None
        assert json.loads(merged)["annotations"] == {"owner": "oras"}

    @pytest.mark.parametrize("garbage", [b"not json", b"[]", b'{"manifests": "x"}'])
    def test_tag_that_is_no_index_is_replaced(self, garbage: bytes) -> None:
        """Whatever else sits at the tag (not a JSON index) is replaced by a real index."""
        assert _digests(merge_referrers(garbage, [A])) == [A["digest"]]
