"""Retries are the client's policy: every request kind of the event path, failed once (a 503 or a
connection reset) by a fault proxy in front of a real registry, is tried again and the work it
belongs to succeeds — without a retry written where the request is made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from replicator.config.loading import load_config
from replicator.domain.events import PushEvent, TagPush
from replicator.engine.copier import Copier
from replicator.engine.endpoint import Endpoint
from replicator.engine.tag_pushes import resolve_tag_push
from replicator.registry import manifests
from replicator.registry.credentials import Credentials, StaticCredentials
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support import skopeo
from tests.support.copy_corpus import CopyCorpus
from tests.support.fault_proxy import Fault, FaultKind, FaultProxy, Predicate, requests
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.token_issuer import TokenIssuer

pytestmark = pytest.mark.integration

ProxyFactory = Callable[[Registry], FaultProxy]
REPOSITORY = "team/app"
USER, PASSWORD = "pusher", "pusher-secret"


@dataclass(frozen=True)
class Kind:
    """A request kind of the event path: which request, at which side of a copy."""

    side: str  # "src" or "dst"
    match: Predicate
    fault: FaultKind = FaultKind.STATUS


def _method(method: str, pattern: str) -> Predicate:
    return requests(method, pattern)


def _mount(request: object) -> bool:
    target = getattr(request, "target", "")
    return getattr(request, "method", "") == "POST" and "mount=" in target


def _upload_start(request: object) -> bool:
    target = getattr(request, "target", "")
    return (
        getattr(request, "method", "") == "POST"
        and target.split("?", 1)[0].endswith("/blobs/uploads/")
        and "mount=" not in target
    )


# The requests of one eager copy of team/app:v1 with its referrers (distribution 2.8 has no
# referrers API: the tag-schema fallback lists the tags and reads the `sha256-<hex>` index).
COPY_KINDS = {
    "manifest-head": Kind("dst", _method("HEAD", r"/manifests/")),
    "manifest-get": Kind("src", _method("GET", r"/manifests/sha256:"), FaultKind.RESET),
    "manifest-put": Kind("dst", _method("PUT", r"/manifests/")),
    "blob-head": Kind("dst", _method("HEAD", r"/blobs/sha256:")),
    "blob-get": Kind("src", _method("GET", r"/blobs/sha256:"), FaultKind.RESET),
    "blob-upload-start": Kind("dst", _upload_start),
    "blob-upload-put": Kind("dst", _method("PUT", r"/blobs/uploads/")),
    "tag-list": Kind("src", _method("GET", r"/tags/list$")),
    "referrers": Kind("src", _method("GET", r"/referrers/")),
}


def _fault(kind: Kind) -> Fault:
    if kind.fault is FaultKind.RESET:
        return Fault.reset(kind.match, keep_bytes=0)
    return Fault.status_code(503, kind.match, times=1)


def _endpoint(pool: ClientPool, host: str, repository: str = REPOSITORY) -> Endpoint:
    return Endpoint(pool.client(RegistrySettings(host=host)), repository)


class TestCopyRequests:
    """Each request of a copy, failed once, is retried and the copy lands the image."""

    @pytest.mark.parametrize("name", list(COPY_KINDS))
    async def test_one_failure_of_a_request_kind_is_retried(
        self,
        name: str,
        copy_corpus: CopyCorpus,
        dst_registry: Registry,
        fault_proxy_factory: ProxyFactory,
    ) -> None:
        """One 503 or reset of this request kind: the copy retries it and lands v1 with its
        referrers, the fault fired exactly once."""
        kind = COPY_KINDS[name]
        proxy = fault_proxy_factory(copy_corpus.registry if kind.side == "src" else dst_registry)
        fault = proxy.add(_fault(kind))
        src_host = proxy.host if kind.side == "src" else copy_corpus.registry.host
        dst_host = proxy.host if kind.side == "dst" else dst_registry.host
        image = copy_corpus.images[REPOSITORY]["v1"]
        async with ClientPool() as pool:
            await Copier().copy_image(
                _endpoint(pool, src_host), "v1", _endpoint(pool, dst_host), tag="v1", eager=True
            )
        assert fault.injected == 1
        listed = skopeo.list_tags(f"{dst_registry.host}/{REPOSITORY}")
        assert "v1" in listed
        assert copy_corpus.referrers_index.tag in listed
        assert dst_registry.has_blob(image.layer_digests[-1])

    async def test_a_refused_mount_is_retried(
        self, copy_corpus: CopyCorpus, dst_registry: Registry, fault_proxy_factory: ProxyFactory
    ) -> None:
        """A cross-repository mount answered 503 once is asked again, and mounts."""
        proxy = fault_proxy_factory(dst_registry)
        copier = Copier()
        async with ClientPool() as pool:
            src = _endpoint(pool, copy_corpus.registry.host)
            await copier.copy_image(
                src, "v1", _endpoint(pool, proxy.host), tag="v1", with_referrers=False
            )
            fault = proxy.add(Fault.status_code(503, _mount, times=1))
            result = await copier.copy_image(
                src, "v1", _endpoint(pool, proxy.host, "team/again"), tag="v1", with_referrers=False
            )
        assert fault.injected == 1
        assert result.stats.blobs_mounted >= 1
        assert skopeo.list_tags(f"{dst_registry.host}/team/again") == ["v1"]


class TestEventRequests:
    """The requests of the event path outside a copy."""

    async def test_ping_is_retried(
        self, copy_corpus: CopyCorpus, fault_proxy_factory: ProxyFactory
    ) -> None:
        """GET /v2/ answered 503 once is asked again and answered."""
        proxy = fault_proxy_factory(copy_corpus.registry)
        fault = proxy.add(Fault.status_code(503, _method("GET", r"^/v2/$"), times=1))
        async with ClientPool() as pool:
            client = pool.client(RegistrySettings(host=proxy.host))
            response = await client.request("GET", "/v2/", scope="")
        assert response.status_code == 200
        assert fault.injected == 1

    async def test_tag_push_resolution_is_retried(
        self, tmp_path: Path, copy_corpus: CopyCorpus, fault_proxy_factory: ProxyFactory
    ) -> None:
        """A tag-only push whose HEAD at the source is answered 503 once resolves to the tag's
        digest (intake would otherwise keep the message aside)."""
        proxy = fault_proxy_factory(copy_corpus.registry)
        fault = proxy.add(Fault.status_code(503, _method("HEAD", r"/manifests/v1$"), times=1))
        path = tmp_path / "replicator.toml"
        path.write_text(
            'version = 1\n[registries.quay]\naccount = "111122223333"\nregion = "us-east-1"\n'
            f'url = "{proxy.url}"\n'
        )
        event = TagPush("quay", REPOSITORY, "v1", None, "event-1", "quay")
        async with ClientPool() as pool:
            found = await resolve_tag_push(event, load_config(path), pool)
        assert isinstance(found, PushEvent)
        assert found.digest == copy_corpus.images[REPOSITORY]["v1"].digest
        assert fault.injected == 1

    async def test_delete_is_retried(
        self, copy_corpus: CopyCorpus, dst_registry: Registry, fault_proxy_factory: ProxyFactory
    ) -> None:
        """A manifest DELETE answered 503 once is sent again and the manifest is gone."""
        proxy = fault_proxy_factory(dst_registry)
        digest = copy_corpus.images[REPOSITORY]["v2"].digest
        async with ClientPool() as pool:
            src = _endpoint(pool, copy_corpus.registry.host)
            dst = _endpoint(pool, proxy.host)
            await Copier().copy_image(src, "v2", dst, tag="v2", with_referrers=False)
            fault = proxy.add(Fault.status_code(503, _method("DELETE", r"/manifests/"), times=1))
            assert await manifests.delete(dst.client, REPOSITORY, digest) is True
            assert await manifests.head(dst.client, REPOSITORY, digest) is None
        assert fault.injected == 1

    async def test_token_request_is_retried(
        self,
        copy_corpus: CopyCorpus,
        token_issuer: TokenIssuer,
        registry_factory: RegistryFactory,
    ) -> None:
        """The token service answering 503 once is asked again; the copy to its registry
        lands."""
        token_issuer.users[USER] = PASSWORD
        proxy = FaultProxy(f"http://127.0.0.1:{token_issuer.port}")
        proxy.start()
        try:
            token_issuer.realm = f"{proxy.url}/token"
            registry = registry_factory(token_auth=token_issuer.registry_auth())
            fault = proxy.add(Fault.status_code(503, _method("GET", r"^/token$"), times=1))
            credentials = StaticCredentials(Credentials(USER, PASSWORD))
            async with ClientPool() as pool:
                dst = Endpoint(
                    pool.client(RegistrySettings(host=registry.host, credentials=credentials)),
                    REPOSITORY,
                )
                src = _endpoint(pool, copy_corpus.registry.host)
                await Copier().copy_image(src, "v2", dst, tag="v2", with_referrers=False)
            assert fault.injected == 1
        finally:
            proxy.stop()
