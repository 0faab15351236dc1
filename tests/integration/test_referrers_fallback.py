"""Referrers copied to a registry without the referrers API (Debian's distribution 2.8): the
`sha256-<hex>` fallback index there is kept listing them, merged rather than overwritten."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.copy_cli import copy_ok
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    SBOM_ARTIFACT_TYPE,
    BuiltImage,
    LayerSpec,
    OCILayout,
)
from tests.support.layout_push import LayoutPusher, push_over_http
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

KIB = 1024


def _push_untagged(layout: Path, registry: Registry, image: BuiltImage) -> None:
    pusher = LayoutPusher(layout, registry.url, "app")
    try:
        pusher.push_manifest(image.digest, OCI_MANIFEST)
    finally:
        pusher.close()


def _fallback_index(registry: Registry, subject: BuiltImage) -> list[str]:
    tag = subject.digest.replace(":", "-")
    response = httpx.get(f"{registry.url}/v2/app/manifests/{tag}", headers={"Accept": OCI_INDEX})
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return [entry["digest"] for entry in response.json()["manifests"]]


class TestFallbackIndex:
    """The destination's referrers index after referrers are copied one at a time."""

    def test_referrers_copied_at_different_times_are_all_listed(
        self, src_registry: Registry, dst_registry: Registry, tmp_path: Path
    ) -> None:
        """Two referrers of one subject copied by digest at different times (as push events
        arrive) are both listed in the destination's fallback index, after the referrer that
        was already listed there (pushed to the destination directly): nothing overwritten."""
        layout = OCILayout(tmp_path)
        subject = layout.image("v1", [LayerSpec(95, 8 * KIB)], label="subject")
        first, second, local = (layout.referrer(subject, seed=seed) for seed in (1, 2, 3))
        push_over_http(tmp_path, "v1", src_registry.url, "app")
        copy_ok(f"{src_registry.host}/app:v1", f"{dst_registry.host}/app:v1")
        # A signature written at the destination by a client (oras) with its index.
        _push_untagged(tmp_path, dst_registry, local)
        index = layout.referrers_index(subject, [local])
        assert index.tag is not None
        push_over_http(tmp_path, index.tag, dst_registry.url, "app")
        assert _fallback_index(dst_registry, subject) == [local.digest]

        _push_untagged(tmp_path, src_registry, first)
        copy_ok(f"{src_registry.host}/app@{first.digest}", f"{dst_registry.host}/app")
        assert _fallback_index(dst_registry, subject) == [local.digest, first.digest]

        _push_untagged(tmp_path, src_registry, second)
        copy_ok(f"{src_registry.host}/app@{second.digest}", f"{dst_registry.host}/app")
        again = copy_ok(f"{src_registry.host}/app@{second.digest}", f"{dst_registry.host}/app")
        assert _fallback_index(dst_registry, subject) == [
            local.digest,
            first.digest,
            second.digest,
        ]
        assert again["manifests"] == 0


class TestFromReferrersApi:
    """A source answering the referrers API (distribution 2.8 does not: a proxy in front of it
    answers the route with an index of the referrers it really holds)."""

    def test_sweep_lists_every_referrer_even_one_already_copied(
        self,
        src_registry: Registry,
        dst_registry: Registry,
        fault_proxy_factory: Callable[[Registry], FaultProxy],
        tmp_path: Path,
    ) -> None:
        """Copying the subject copies the referrers the API names; the destination's index
        lists both, including the one the destination already held (no copy, so only the
        sweep's repair can list it)."""
        layout = OCILayout(tmp_path)
        subject = layout.image("v1", [LayerSpec(96, 8 * KIB)], label="subject")
        first, second = (layout.referrer(subject, seed=seed) for seed in (4, 5))
        push_over_http(tmp_path, "v1", src_registry.url, "app")
        for referrer in (first, second):
            _push_untagged(tmp_path, src_registry, referrer)
        _push_untagged(tmp_path, dst_registry, first)  # there before, listed nowhere
        answer = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": r.digest, "size": r.size,
                 "artifactType": SBOM_ARTIFACT_TYPE}
                for r in (first, second)
            ],
        }  # fmt: skip
        proxy = fault_proxy_factory(src_registry)
        proxy.add(
            Fault.serve_body(
                requests("GET", rf"^/v2/app/referrers/{subject.digest}"),
                json.dumps(answer).encode(),
                content_type=OCI_INDEX,
            )
        )
        copy_ok(f"{proxy.host}/app:v1", f"{dst_registry.host}/app:v1")
        assert sorted(_fallback_index(dst_registry, subject)) == sorted(
            [first.digest, second.digest]
        )
