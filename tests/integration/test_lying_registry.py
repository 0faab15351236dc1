"""A lying source registry: a fault proxy in front of a real docker-registry rewrites its
catalog and tag-list answers (names with `..` segments) and serves manifests that do not hash
to the sha512 digest asked for. Names are validated wherever they come from, so a name that
would walk out of its repository in a URL is reported and skipped, never copied, and a
`sha512:` manifest is verified like a `sha256:` one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from replicator.domain.images.manifests import digest_of
from replicator.errors import InvalidReferenceError, ManifestError
from replicator.registry import manifests
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support import skopeo
from tests.support.daemon import (
    DaemonSettings,
    RegistrySpec,
    replicator_cli,
    rule,
    write_config,
)
from tests.support.fault_proxy import Fault, FaultProxy, manifest_get, requests
from tests.support.images import LayerSpec, OCILayout
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

SOURCE_ACCOUNT = "111122223333"
DEST_ACCOUNT = "444455556666"
REGION = "eu-west-1"
# The destination admits releases/* from the source but denies releases/internal*: the name
# `releases/x/../internal` matches the first and not the second, and a client that lets `..`
# reach its URL writes it to releases/internal.
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Releases",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{SOURCE_ACCOUNT}:root"},
            "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
            "Resource": f"arn:aws:ecr:{REGION}:{DEST_ACCOUNT}:repository/releases/*",
        },
        {
            "Sid": "NotInternal",
            "Effect": "Deny",
            "Principal": {"AWS": f"arn:aws:iam::{SOURCE_ACCOUNT}:root"},
            "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
            "Resource": f"arn:aws:ecr:{REGION}:{DEST_ACCOUNT}:repository/releases/internal*",
        },
    ],
}
LYING_REPOSITORY = "releases/x/../internal"
# On releases/app, this tag's manifest path resolves to /v2/releases/internal/manifests/v1.
LYING_TAG = "v1/../../../internal/manifests/v1"
JSON = "application/json"


@dataclass
class LyingWorld:
    """A real source behind a lying proxy, a real destination, and a config naming them."""

    source: Registry
    proxy: FaultProxy
    destination: Registry
    config: Path

    def backfill(self) -> dict[str, Any]:
        """Run `replicator backfill --json`; its JSON (exit code under "exit")."""
        result = replicator_cli(self.config, "backfill", "--json")
        assert result.returncode in (0, 1), result.stderr
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc | {"exit": result.returncode, "stderr": result.stderr}


@pytest.fixture
def lying_world(
    tmp_path: Path,
    registry_factory: RegistryFactory,
    fault_proxy_factory: Any,
) -> Iterator[LyingWorld]:
    """releases/app:v1 and releases/internal:v1 at the source, nothing at the destination."""
    source, destination = registry_factory(), registry_factory()
    layout = OCILayout(tmp_path / "layout")
    for seed, repository in enumerate(("releases/app", "releases/internal"), start=1):
        name = repository.replace("/", "-")
        layout.image(name, [LayerSpec(seed=seed, size=1024)], label=repository)
        skopeo.push_layout(layout.path, name, f"{source.host}/{repository}:v1")
    proxy: FaultProxy = fault_proxy_factory(source)
    specs = [
        RegistrySpec(
            "src", SOURCE_ACCOUNT, REGION, proxy.url,
            replication={"rules": [rule([(REGION, DEST_ACCOUNT)], ["releases"])]},
        ),
        RegistrySpec("dst", DEST_ACCOUNT, REGION, destination.url, policy=POLICY),
    ]  # fmt: skip
    settings = DaemonSettings(
        broker_port=1883,
        journal_url=f"sqlite:///{tmp_path / 'journal.db'}",
        client_id=f"replicator-{tmp_path.name}",
    )
    yield LyingWorld(source, proxy, destination, write_config(tmp_path, specs, settings))
    source.cleanup()
    destination.cleanup()


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


class TestNamesFromTheRegistry:
    def test_catalog_entry_with_dot_segments_is_skipped_and_reported(
        self, lying_world: LyingWorld
    ) -> None:
        """`releases/x/../internal` from the catalog is reported and skipped: nothing is
        written to releases/internal, which the policy denies."""
        lying_world.proxy.add(
            Fault.serve_body(
                requests("GET", r"^/v2/_catalog$"),
                _json({"repositories": ["releases/app", LYING_REPOSITORY]}),
                content_type=JSON,
            )
        )
        summary = lying_world.backfill()
        assert "releases/internal" not in lying_world.destination.repositories()
        assert "releases/app" in lying_world.destination.repositories()
        assert any(LYING_REPOSITORY in error for error in summary["errors"]), summary

    def test_tag_with_dot_segments_is_skipped_and_reported(self, lying_world: LyingWorld) -> None:
        """A tag `v1/../../../internal/manifests/v1` of releases/app is reported and skipped:
        its path would read and write releases/internal:v1."""
        lying_world.proxy.add(
            Fault.serve_body(
                requests("GET", r"^/v2/_catalog$"),
                _json({"repositories": ["releases/app"]}),
                content_type=JSON,
            )
        )
        lying_world.proxy.add(
            Fault.serve_body(
                requests("GET", r"^/v2/releases/app/tags/list$"),
                _json({"name": "releases/app", "tags": ["v1", LYING_TAG]}),
                content_type=JSON,
            )
        )
        summary = lying_world.backfill()
        assert "releases/internal" not in lying_world.destination.repositories()
        assert skopeo.digest_of(f"{lying_world.destination.host}/releases/app:v1") == (
            skopeo.digest_of(f"{lying_world.source.host}/releases/app:v1")
        )
        assert any(LYING_TAG in error for error in summary["errors"]), summary


class TestUrlPaths:
    async def test_dot_segments_never_reach_a_url(self, src_registry: Registry) -> None:
        """A path with a `..` segment is refused before a request is made, whoever built it."""
        async with ClientPool() as pool:
            client = pool.client(RegistrySettings(host=src_registry.host))
            for path in (
                f"/v2/{LYING_REPOSITORY}/tags/list",
                f"/v2/releases/app/manifests/{LYING_TAG}",
                "/v2/releases/app/manifests/%2e%2e/x",
            ):
                with pytest.raises(InvalidReferenceError):
                    await client.request("GET", path, scope="repository:releases/app:pull")


SOME_MANIFEST = _json({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": digest_of(b"{}"), "size": 2},
    "layers": [],
})  # fmt: skip


class TestSha512:
    async def test_sha512_manifest_that_does_not_hash_to_its_digest_is_refused(
        self, src_registry: Registry, fault_proxy_factory: Any
    ) -> None:
        """A manifest asked for by `sha512:` digest whose bytes hash to something else is
        refused, as a `sha256:` one is."""
        wrong = "sha512:" + hashlib.sha512(b"other bytes").hexdigest()
        proxy: FaultProxy = fault_proxy_factory(src_registry)
        proxy.add(Fault.serve_body(manifest_get(wrong), SOME_MANIFEST))
        async with ClientPool() as pool:
            client = pool.client(RegistrySettings(host=proxy.host))
            with pytest.raises(ManifestError, match="hash"):
                await manifests.get(client, "releases/app", wrong)

    async def test_sha512_manifest_that_hashes_to_its_digest_is_read(
        self, src_registry: Registry, fault_proxy_factory: Any
    ) -> None:
        """A manifest whose bytes hash to the `sha512:` digest asked for is read."""
        right = "sha512:" + hashlib.sha512(SOME_MANIFEST).hexdigest()
        proxy: FaultProxy = fault_proxy_factory(src_registry)
        proxy.add(Fault.serve_body(manifest_get(right), SOME_MANIFEST))
        async with ClientPool() as pool:
            client = pool.client(RegistrySettings(host=proxy.host))
            manifest = await manifests.get(client, "releases/app", right)
        assert manifest.raw == SOME_MANIFEST
