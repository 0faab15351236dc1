"""The referrers tag schema (OCI distribution 1.1): the index a registry without the referrers
API keeps under `<alg>-<hex>` of the subject, listing the manifests that refer to it.

Clients (oras, cosign, regclient) read that index where the API is missing. A copier that
writes referrers to such a registry must add them to it, merging with what is already listed
(referrers copied earlier, signatures pushed there directly) rather than overwriting it.
"""

from __future__ import annotations

import json
from typing import Any

from replicator.domain.images.manifests import Descriptor, Manifest
from replicator.domain.images.media import MediaType


def fallback_tag(subject_digest: str) -> str:
    """The tag of a subject's referrers index: `sha256:<hex>` -> `sha256-<hex>`."""
    algorithm, _, hexpart = subject_digest.partition(":")
    return f"{algorithm}-{hexpart}"


def referrer_entry(referrer: Manifest) -> dict[str, Any]:
    """The descriptor of `referrer` as the referrers index lists it: its artifactType (else its
    config's media type, as the spec says) and its annotations."""
    entry: dict[str, Any] = {
        "mediaType": referrer.media_type,
        "digest": referrer.digest,
        "size": len(referrer.raw),
    }
    artifact_type = referrer.artifact_type or (
        referrer.config.media_type if referrer.config else None
    )
    if artifact_type:
        entry["artifactType"] = artifact_type
    try:
        annotations = json.loads(referrer.raw).get("annotations")
    except (ValueError, AttributeError):  # parsed before, so only a non-object body
        annotations = None
    if isinstance(annotations, dict) and annotations:
        entry["annotations"] = annotations
    return entry


def listed_entry(descriptor: Descriptor) -> dict[str, Any]:
    """The index entry of a referrer known only by its descriptor in a referrers API answer
    (its annotations, which the parsed descriptor does not keep, are left out)."""
    entry: dict[str, Any] = {
        "mediaType": descriptor.media_type,
        "digest": descriptor.digest,
        "size": descriptor.size,
    }
    if descriptor.artifact_type:
        entry["artifactType"] = descriptor.artifact_type
    return entry


def merge_referrers(existing: bytes | None, entries: list[dict[str, Any]]) -> bytes | None:
    """The index to store after adding `entries` to `existing` (the index now at the tag, or
    None), or None when every entry is listed already (nothing to write).

    Entries already listed keep their place and content; new ones are appended in order. An
    existing tag that is not an index (or not JSON) is replaced: it cannot be a referrers index.
    """
    doc: dict[str, Any] = {}
    if existing is not None:
        try:
            parsed = json.loads(existing)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("manifests"), list):
            doc = parsed
    listed = doc.get("manifests", [])
    known = {item.get("digest") for item in listed if isinstance(item, dict)}
    added = [entry for entry in entries if entry["digest"] not in known]
    if doc and not added:
        return None
    merged = {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_INDEX.value,
        **{k: v for k, v in doc.items() if k not in ("schemaVersion", "mediaType", "manifests")},
        "manifests": [*listed, *added],
    }
    return json.dumps(merged, separators=(",", ":")).encode()
