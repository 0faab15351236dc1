"""Foreign (non-distributable) layers, as in Windows base images: the manifest is copied as it
is and the layer left where its `urls` point, unless --allow-nondistributable-artifacts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from tests.support.copy_cli import copy_ok
from tests.support.images import DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST
from tests.support.layout_push import LayoutPusher
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


def _accepting_foreign_layers(registry: Registry) -> Registry:
    """Restart `registry` accepting manifests with foreign layers: distribution refuses them
    (500 MANIFEST_BLOB_UNKNOWN) unless `validation.manifests.urls.allow` matches their urls;
    then it does not check that the blob is present, as for Windows images on Docker Hub."""
    config = json.loads(registry.config_path.read_text())
    config["validation"] = {"manifests": {"urls": {"allow": ["^https://"]}}}
    registry.config_path.write_text(json.dumps(config))
    registry.restart()
    return registry


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_windows_image(
    registry: Registry, folder: Path, *, with_foreign_blob: bool
) -> tuple[str, dict[str, str]]:
    """Push `win:ltsc` whose first layer is foreign (urls at a far host); the foreign blob is
    pushed to the source only if asked. Returns the manifest digest and blob digests by role."""
    blobs = {
        "foreign": b"windows base layer, licensed, never redistributed" * 100,
        "layer": b"application layer" * 50,
        "config": json.dumps({"architecture": "amd64", "os": "windows"}).encode(),
    }
    digests = {role: _digest(data) for role, data in blobs.items()}
    store = folder / "blobs" / "sha256"
    store.mkdir(parents=True)
    for role, data in blobs.items():
        (store / digests[role].split(":", 1)[1]).write_bytes(data)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG,
                "digest": digests["config"],
                "size": len(blobs["config"]),
            },
            "layers": [
                {
                    "mediaType": FOREIGN_LAYER,
                    "digest": digests["foreign"],
                    "size": len(blobs["foreign"]),
                    "urls": [f"https://mcr.microsoft.example/v2/blobs/{digests['foreign']}"],
                },
                {
                    "mediaType": DOCKER_LAYER_GZIP,
                    "digest": digests["layer"],
                    "size": len(blobs["layer"]),
                },
            ],
        }
    ).encode()
    pusher = LayoutPusher(folder, registry.url, "win")
    try:
        for role in ("config", "layer", *(("foreign",) if with_foreign_blob else ())):
            pusher.push_blob(digests[role])
        pusher.put_manifest("ltsc", manifest, DOCKER_MANIFEST)
    finally:
        pusher.close()
    return _digest(manifest), digests


def _blob_status(registry: Registry, digest: str) -> int:
    return httpx.head(f"{registry.url}/v2/win/blobs/{digest}").status_code


class TestForeignLayers:
    """`replicator copy` of an image with a foreign layer."""

    def test_foreign_layer_stays_behind_by_default(
        self, src_registry: Registry, dst_registry: Registry, tmp_path: Path
    ) -> None:
        """The copy succeeds with the same manifest digest; the config and ordinary layer are
        copied, the foreign layer (absent at the source, as on any mirror) is not asked for."""
        _accepting_foreign_layers(dst_registry)
        source = _accepting_foreign_layers(src_registry)
        digest, blobs = _push_windows_image(source, tmp_path, with_foreign_blob=False)
        copy_ok(f"{src_registry.host}/win:ltsc", f"{dst_registry.host}/win:ltsc")
        served = httpx.head(
            f"{dst_registry.url}/v2/win/manifests/ltsc", headers={"Accept": DOCKER_MANIFEST}
        )
        assert served.headers["docker-content-digest"] == digest
        assert _blob_status(dst_registry, blobs["config"]) == 200
        assert _blob_status(dst_registry, blobs["layer"]) == 200
        assert _blob_status(dst_registry, blobs["foreign"]) == 404
        assert f"/v2/win/blobs/{blobs['foreign']}" not in src_registry.log_text()

    def test_foreign_layer_copied_when_allowed(
        self, src_registry: Registry, dst_registry: Registry, tmp_path: Path
    ) -> None:
        """With --allow-nondistributable-artifacts the foreign layer is copied as well."""
        _accepting_foreign_layers(dst_registry)
        source = _accepting_foreign_layers(src_registry)
        _, blobs = _push_windows_image(source, tmp_path, with_foreign_blob=True)
        summary = copy_ok(
            f"{src_registry.host}/win:ltsc",
            f"{dst_registry.host}/win:ltsc",
            "--allow-nondistributable-artifacts",
        )
        assert summary["blobs_copied"] == 3
        assert _blob_status(dst_registry, blobs["foreign"]) == 200
