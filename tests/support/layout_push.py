"""Push an OCI layout's manifest over plain HTTP, for what skopeo 1.9 refuses to push as-is.

skopeo reads only OCI media types from an `oci:` layout (Docker schema 2 images in a layout are
"not found") and will not push an OCI index of artifacts with `--preserve-digests`. This pusher
sends the bytes of the layout unchanged: blobs (monolithic POST + PUT), children, then the
manifest by tag or digest. It is test set-up, independent of the engine under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.images import INDEX_MEDIA_TYPES, REF_NAME_ANNOTATION

# Generous: test blobs are small, and loopback is fast even on a loaded CI machine.
HTTP_TIMEOUT_SECONDS = 60.0


def _blob_path(layout: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hex_digest


def _find_tag(layout: Path, tag: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_bytes())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get(REF_NAME_ANNOTATION) == tag:
            found: dict[str, Any] = entry
            return found
    raise LookupError(f"tag {tag!r} not in {layout}/index.json")


class LayoutPusher:
    """Pushes manifests of one layout to one repository of a registry."""

    def __init__(
        self,
        layout: Path,
        registry_url: str,
        repository: str,
        *,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.layout = layout
        self.base = f"{registry_url}/v2/{repository}"
        self.client = httpx.Client(auth=auth, timeout=HTTP_TIMEOUT_SECONDS)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def push_tag(self, tag: str, *, as_tag: str | None = None) -> str:
        """Push the manifest that `tag` names in the layout under `as_tag` (default: the same
        tag); return its digest."""
        entry = _find_tag(self.layout, tag)
        self.push_manifest(entry["digest"], entry["mediaType"], reference=as_tag or tag)
        digest: str = entry["digest"]
        return digest

    def push_manifest(self, digest: str, media_type: str, *, reference: str | None = None) -> None:
        """Push a manifest and everything it references, then PUT it by reference or digest."""
        data = _blob_path(self.layout, digest).read_bytes()
        manifest = json.loads(data)
        if media_type in INDEX_MEDIA_TYPES:
            for child in manifest["manifests"]:
                self.push_manifest(child["digest"], child["mediaType"])
        else:
            for blob in [manifest["config"], *manifest.get("layers", [])]:
                self.push_blob(blob["digest"])
        self.put_manifest(reference or digest, data, media_type)

    def push_blob(self, digest: str) -> None:
        """Upload a blob unless the repository already has it."""
        if self.client.head(f"{self.base}/blobs/{digest}").status_code == 200:
            return
        started = self.client.post(f"{self.base}/blobs/uploads/")
        started.raise_for_status()
        location = httpx.URL(started.url).join(started.headers["Location"])
        content = _blob_path(self.layout, digest).read_bytes()
        done = self.client.put(
            location.copy_merge_params({"digest": digest}),
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        done.raise_for_status()

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> None:
        """PUT manifest bytes as they are."""
        response = self.client.put(
            f"{self.base}/manifests/{reference}", content=data, headers={"Content-Type": media_type}
        )
        if response.status_code != 201:
            raise RuntimeError(
                f"PUT manifest {reference}: {response.status_code} {response.text[:500]}"
            )


def push_over_http(
    layout: Path,
    tag: str,
    registry_url: str,
    repository: str,
    *,
    auth: tuple[str, str] | None = None,
    as_tag: str | None = None,
) -> str:
    """Push `tag` of layout to registry_url/repository (as `as_tag` if given) over HTTP;
    return the manifest digest."""
    pusher = LayoutPusher(layout, registry_url, repository, auth=auth)
    try:
        return pusher.push_tag(tag, as_tag=as_tag)
    finally:
        pusher.close()
