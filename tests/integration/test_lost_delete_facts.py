"""What a reconcile pass reads of a lost delete's origin (scan/lost_deletes.origin_facts), from a
real docker-registry, honest or behind a proxy that lies: (does the origin serve the image,
does it keep the image's parts). Only bytes that hash to their digest count, so a registry
answering 200 for blobs it does not have, or another image for the digest asked, never reads as
an image kept or a delete with its parts left — the facts on which the pass deletes the other
side's copy (domain.routing.scan.replay_delete)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from replicator.scan.lost_deletes import origin_facts
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import OCI_MANIFEST, BuiltImage, LayerSpec, OCILayout
from tests.support.layout_push import push_over_http
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

REPOSITORY = "facts/app"
KIB = 1024
# docker-registry answers a local DELETE in milliseconds.
HTTP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Case:
    """What the origin holds of the replica's image `kind`, how it lies, and the facts read."""

    name: str
    kind: str  # "image" (its config blob is its part) or "index" (its first child)
    origin: str  # "same" (serves it), "deleted" (manifest deleted, parts left), "none"
    lie: str  # "", "every-blob-200", "other-manifest" (for the digest), "other-child"
    facts: tuple[bool | None, bool]


CASES = [
    Case("serves-the-image", "image", "same", "", (True, False)),
    Case("deleted-parts-left", "image", "deleted", "", (False, True)),
    Case("never-had-it", "image", "none", "", (False, False)),
    Case("never-had-it-every-blob-200", "image", "none", "every-blob-200", (False, False)),
    Case("never-had-it-serves-another-image", "image", "none", "other-manifest", (None, False)),
    Case("index-deleted-children-left", "index", "deleted", "", (False, True)),
    Case("index-never-had-it-serves-another-child", "index", "none", "other-child", (False, False)),
]


def _lie(case: Case, image: BuiltImage, other: httpx.Response) -> Fault | None:
    """The proxy's fault for `case`: its lie about the image, none for an honest origin."""
    if case.lie == "every-blob-200":
        return Fault.status_code(200, requests(None, r"/blobs/sha256:"), times=None)
    if case.lie not in ("other-manifest", "other-child"):
        return None
    asked = image.digest if case.lie == "other-manifest" else image.children[0].digest
    return Fault.serve_body(
        requests(None, f"/manifests/{asked}$"),
        other.content,
        content_type=other.headers["content-type"],
    )


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_origin_facts(
    case: Case, src_registry: Registry, dst_registry: Registry, tmp_path: Path
) -> None:
    """The facts read of the origin are the table's, whatever the origin claims."""
    replica, origin = src_registry, dst_registry
    layout = OCILayout(tmp_path / "layout")
    layers = [LayerSpec(7, 2 * KIB)]
    image = (
        layout.multi_platform("v1", layers) if case.kind == "index" else layout.image("v1", layers)
    )
    layout.image("v2", [LayerSpec(8, 2 * KIB)])
    push_over_http(layout.path, "v1", replica.url, REPOSITORY)
    push_over_http(layout.path, "v2", origin.url, REPOSITORY)
    if case.origin != "none":
        push_over_http(layout.path, "v1", origin.url, REPOSITORY)
    if case.origin == "deleted":
        deleted = httpx.delete(
            f"{origin.url}/v2/{REPOSITORY}/manifests/{image.digest}", timeout=HTTP_TIMEOUT_SECONDS
        )
        assert deleted.status_code == 202
    other = httpx.get(
        f"{origin.url}/v2/{REPOSITORY}/manifests/v2",
        headers={"Accept": OCI_MANIFEST},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    proxy = FaultProxy(origin.url).start()
    try:
        lie = _lie(case, image, other)
        if lie is not None:
            proxy.add(lie)
        async with ClientPool() as pool:
            facts = await origin_facts(
                pool.client(RegistrySettings(host=proxy.host)),
                pool.client(RegistrySettings(host=replica.host)),
                REPOSITORY,
                image.digest,
            )
        assert lie is None or lie.injected > 0, "the lie was never asked"
    finally:
        proxy.stop()
    assert facts == case.facts
