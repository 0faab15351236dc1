"""A destination that refuses cross-repository mounts as Pulp does (`404 BLOB_UNKNOWN` where the
distribution spec says SHOULD 202): a fault proxy answering mounts so, in front of a real
docker-registry."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from replicator.engine.copier import Copier
from replicator.engine.endpoint import Endpoint
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support import skopeo
from tests.support.copy_cli import copy_ok
from tests.support.copy_corpus import CopyCorpus
from tests.support.fault_proxy import Fault, FaultProxy, unheld_mounts
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

ProxyFactory = Callable[[Registry], FaultProxy]


def pulp_like(
    dst_registry: Registry, fault_proxy_factory: ProxyFactory
) -> tuple[FaultProxy, Fault]:
    """A proxy in front of `dst_registry` refusing every mount of a blob its `from` repository
    does not hold with 404 BLOB_UNKNOWN; mounts of held blobs reach the registry (201)."""
    proxy = fault_proxy_factory(dst_registry)
    fault = proxy.add(
        Fault.status_code(
            404, unheld_mounts(dst_registry.url), times=None, error_code="BLOB_UNKNOWN"
        )
    )
    return proxy, fault


def mounts(proxy: FaultProxy) -> list[tuple[str, str]]:
    """(from repository, digest) of every mount the proxy saw, in order."""
    found = []
    for record in proxy.records:
        query = parse_qs(urlsplit(record.target).query)
        if record.method == "POST" and "mount" in query:
            found.append((query["from"][0], query["mount"][0]))
    return found


class TestRefusedMounts:
    def test_copy_into_a_namespace_holding_repositories_falls_back_to_uploads(
        self, copy_corpus: CopyCorpus, dst_registry: Registry, fault_proxy_factory: ProxyFactory
    ) -> None:
        """`copy -r` into a namespace that already holds a repository succeeds for every
        repository when the destination refuses the guessed sibling mounts 404 BLOB_UNKNOWN:
        each refused mount becomes a plain upload."""
        copy_ok(copy_corpus.ref("team/base-a", "1"), f"{dst_registry.host}/team/base-a:1")
        proxy, fault = pulp_like(dst_registry, fault_proxy_factory)
        summary = copy_ok("-r", copy_corpus.ref("team"), f"{proxy.host}/team")
        assert fault.injected >= 1, "no mount was refused: the test proves nothing"
        assert summary["failures"] == []
        for repository in copy_corpus.repositories("team"):
            source_tags = sorted(skopeo.list_tags(copy_corpus.ref(repository)))
            assert sorted(skopeo.list_tags(f"{dst_registry.host}/{repository}")) == source_tags

    async def test_a_refused_guess_stops_the_guessing_at_that_registry(
        self, copy_corpus: CopyCorpus, dst_registry: Registry, fault_proxy_factory: ProxyFactory
    ) -> None:
        """After the destination refused a guessed mount, the next image gets no guessed mount:
        it mounts only blobs this process placed there itself, and uploads the rest."""
        copy_ok(copy_corpus.ref("team/base-a", "1"), f"{dst_registry.host}/team/base-a:1")
        proxy, fault = pulp_like(dst_registry, fault_proxy_factory)
        copier = Copier()
        first = copy_corpus.images["team/app"]["v2"]
        second = copy_corpus.images["team/docker"]["1.0"]
        async with ClientPool() as pool:
            src_client = pool.client(RegistrySettings(host=copy_corpus.registry.host))
            dst_client = pool.client(RegistrySettings(host=proxy.host))
            await copier.copy_image(
                Endpoint(src_client, "team/app"), first.digest, Endpoint(dst_client, "team/app"),
                tag="v2", with_referrers=False,
            )  # fmt: skip
            refused_first = fault.injected
            seen_first = len(mounts(proxy))
            result = await copier.copy_image(
                Endpoint(src_client, "team/docker"), second.digest,
                Endpoint(dst_client, "team/docker"), tag="1.0", with_referrers=False,
            )  # fmt: skip
        assert refused_first >= 1, "no guessed mount was refused: the test proves nothing"
        assert fault.injected == refused_first, mounts(proxy)
        later = mounts(proxy)[seen_first:]
        assert later, "the shared base layers were not mounted from where this process put them"
        assert {source for source, _ in later} == {"team/app"}
        assert result.stats.blobs_mounted == len(later)
        assert result.stats.blobs_copied == len(second.blob_digests - first.blob_digests)
        assert skopeo.digest_of(f"{dst_registry.host}/team/docker:1.0") == second.digest
