"""The copy tests' own infrastructure works: registries, layouts, skopeo pushes, the fault proxy."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from tests.support import skopeo
from tests.support.fault_proxy import (
    Fault,
    FaultProxy,
    ProxiedRequest,
    blob_get,
    manifest_get,
    manifest_requests,
    requests,
    uploads,
)
from tests.support.images import OCI_MANIFEST, LayerSpec, OCILayout, sha256_digest
from tests.support.layout_push import push_over_http
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

BASE = [LayerSpec(seed=1, size=4096), LayerSpec(seed=2, size=8192)]


@pytest.fixture
def pushed(src_registry: Registry, tmp_path: Path) -> tuple[Registry, str, str]:
    """A registry holding `app:v1`; returns it with the v1 manifest digest and a layer digest."""
    layout = OCILayout(tmp_path / "layout")
    image = layout.image("v1", [*BASE, LayerSpec(seed=3, size=200_000)])
    skopeo.push_layout(layout.path, "v1", f"{src_registry.host}/app:v1")
    return src_registry, image.digest, image.layer_digests[-1]


class TestRegistry:
    """The docker-registry fixture."""

    def test_starts_empty_and_answers_v2(self, src_registry: Registry) -> None:
        """A fresh registry answers GET /v2/ with 200 and has no repositories."""
        assert httpx.get(f"{src_registry.url}/v2/").status_code == 200
        assert src_registry.repositories() == []

    def test_basic_auth_refuses_anonymous_and_accepts_user(
        self, registry_factory: RegistryFactory
    ) -> None:
        """A registry started with auth answers 401 without and 200 with the credentials."""
        registry = registry_factory(auth=("alice", "wonderland"))
        assert httpx.get(f"{registry.url}/v2/").status_code == 401
        assert httpx.get(f"{registry.url}/v2/", auth=("alice", "wonderland")).status_code == 200
        assert httpx.get(f"{registry.url}/v2/", auth=("alice", "nope")).status_code == 401

    def test_restart_keeps_storage_and_port(self, pushed: tuple[Registry, str, str]) -> None:
        """restart() serves the same images on the same port."""
        registry, digest, _ = pushed
        registry.restart()
        assert skopeo.digest_of(f"{registry.host}/app:v1") == digest

    def test_access_log_records_requests(self, pushed: tuple[Registry, str, str]) -> None:
        """The log file holds the access log line of each request."""
        registry, _, _ = pushed
        httpx.get(f"{registry.url}/v2/app/tags/list")
        assert '"GET /v2/app/tags/list HTTP/1.1" 200' in registry.log_text()


class TestImages:
    """Layouts built by tests/support/images.py and pushed with skopeo or over HTTP."""

    def test_same_seed_gives_same_layer_in_two_layouts(self, tmp_path: Path) -> None:
        """Base layers built from one seed have one digest in any layout: images share them."""
        first = OCILayout(tmp_path / "a").image("x", [*BASE, LayerSpec(seed=10, size=10)])
        second = OCILayout(tmp_path / "b").image("y", [*BASE, LayerSpec(seed=11, size=10)])
        assert first.layer_digests[:2] == second.layer_digests[:2]
        assert first.layer_digests[2] != second.layer_digests[2]

    def test_push_preserves_every_digest_of_an_index(
        self, src_registry: Registry, tmp_path: Path
    ) -> None:
        """A two-platform index pushed with skopeo keeps its digest and both children's."""
        layout = OCILayout(tmp_path / "layout")
        index = layout.multi_platform("multi", BASE)
        skopeo.push_layout(layout.path, "multi", f"{src_registry.host}/multi:1")
        for digest in index.manifest_digests:
            assert skopeo.digest_of(f"{src_registry.host}/multi@{digest}") == digest
        assert len(set(index.manifest_digests)) == 3

    @pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker-schema2"])
    def test_http_push_keeps_media_type(
        self, src_registry: Registry, tmp_path: Path, docker: bool
    ) -> None:
        """The HTTP pusher lands Docker schema 2 and OCI indexes byte for byte."""
        layout = OCILayout(tmp_path / "layout")
        index = layout.multi_platform("m", BASE, docker=docker)
        assert push_over_http(layout.path, "m", src_registry.url, "repo") == index.digest
        raw = skopeo.inspect_raw(f"{src_registry.host}/repo:m")
        assert sha256_digest(raw) == index.digest
        assert index.media_type.encode() in raw

    def test_signature_and_referrers_index_land(
        self, src_registry: Registry, tmp_path: Path
    ) -> None:
        """A cosign .sig tag and a referrers index tag land next to their subject."""
        layout = OCILayout(tmp_path / "layout")
        subject = layout.image("v1", BASE)
        signature = layout.cosign_signature(subject, reference=f"{src_registry.host}/app")
        referrer = layout.referrer(subject)
        fallback = layout.referrers_index(subject, [referrer])
        skopeo.push_layout(layout.path, "v1", f"{src_registry.host}/app:v1")
        assert signature.tag is not None
        skopeo.push_layout(layout.path, signature.tag, f"{src_registry.host}/app:{signature.tag}")
        assert fallback.tag is not None
        push_over_http(layout.path, fallback.tag, src_registry.url, "app")
        assert skopeo.list_tags(f"{src_registry.host}/app") == sorted(
            ["v1", signature.tag, fallback.tag]
        )
        assert skopeo.digest_of(f"{src_registry.host}/app@{referrer.digest}") == referrer.digest

    def test_list_tags_of_unknown_repository_is_empty(self, src_registry: Registry) -> None:
        """list_tags answers [] for a repository that does not exist."""
        assert skopeo.list_tags(f"{src_registry.host}/nothing") == []


ProxyFactory = Callable[[Registry], FaultProxy]


class TestFaultProxy:
    """The fault proxy in front of a real registry, driven with httpx."""

    def test_passes_through_and_counts(
        self, pushed: tuple[Registry, str, str], fault_proxy_factory: ProxyFactory
    ) -> None:
        """Without faults, bodies arrive intact over one kept-alive connection, and are counted."""
        registry, _, layer = pushed
        proxy = fault_proxy_factory(registry)
        with httpx.Client(base_url=proxy.url) as client:
            for _ in range(3):
                response = client.get(f"/v2/app/blobs/{layer}")
                assert sha256_digest(response.content) == layer
        assert proxy.requests_seen == 3
        assert proxy.faults_injected == 0

    @pytest.mark.parametrize("http_date", [False, True], ids=["seconds", "http-date"])
    def test_429_with_retry_after_then_passes(
        self,
        pushed: tuple[Registry, str, str],
        fault_proxy_factory: ProxyFactory,
        http_date: bool,
    ) -> None:
        """429 with Retry-After (seconds or HTTP-date) is answered N times, then requests pass."""
        registry, digest, _ = pushed
        proxy = fault_proxy_factory(registry)
        fault = proxy.add(
            Fault.status_code(
                429,
                manifest_get(),
                times=2,
                retry_after_seconds=3,
                retry_after_http_date=http_date,
            )
        )
        with httpx.Client(base_url=proxy.url, headers={"Accept": OCI_MANIFEST}) as client:
            statuses = [client.get("/v2/app/manifests/v1") for _ in range(3)]
        assert [response.status_code for response in statuses] == [429, 429, 200]
        retry_after = statuses[0].headers["retry-after"]
        if http_date:
            wait = parsedate_to_datetime(retry_after).timestamp() - time.time()
            assert 1 < wait <= 3
        else:
            assert retry_after == "3"
        assert sha256_digest(statuses[2].content) == digest
        assert fault.injected == 2

    def test_share_of_5xx_is_seeded(
        self, pushed: tuple[Registry, str, str], fault_proxy_factory: ProxyFactory
    ) -> None:
        """A share of 0.5 fails some but not all of 40 requests, the same ones for one seed."""
        registry, _, _ = pushed
        runs = []
        for _ in range(2):
            proxy = fault_proxy_factory(registry)
            proxy.add(Fault.status_code(503, requests("GET"), times=None, share=0.5))
            with httpx.Client(base_url=proxy.url) as client:
                runs.append([client.get("/v2/").status_code for _ in range(40)])
        assert runs[0] == runs[1]
        assert 0 < runs[0].count(503) < 40
        assert set(runs[0]) == {200, 503}

    def test_corrupt_flips_bytes_same_length(
        self, pushed: tuple[Registry, str, str], fault_proxy_factory: ProxyFactory
    ) -> None:
        """A corrupted blob GET has the right length and the wrong digest."""
        registry, _, layer = pushed
        proxy = fault_proxy_factory(registry)
        proxy.add(Fault.corrupt(blob_get(layer)))
        response = httpx.get(f"{proxy.url}/v2/app/blobs/{layer}")
        assert response.status_code == 200
        assert len(response.content) == int(response.headers["content-length"])
        assert sha256_digest(response.content) != layer

    @pytest.mark.parametrize("make", [Fault.truncate, Fault.reset], ids=["truncate", "reset"])
    def test_cut_body_fails_the_read_then_passes(
        self,
        pushed: tuple[Registry, str, str],
        fault_proxy_factory: ProxyFactory,
        make: Callable[..., Fault],
    ) -> None:
        """A truncated or reset blob body is a transport error; the next GET succeeds."""
        registry, _, layer = pushed
        proxy = fault_proxy_factory(registry)
        proxy.add(make(blob_get(), keep_bytes=1000))
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{proxy.url}/v2/app/blobs/{layer}")
        assert sha256_digest(httpx.get(f"{proxy.url}/v2/app/blobs/{layer}").content) == layer

    def test_stall_delays_the_answer(
        self, pushed: tuple[Registry, str, str], fault_proxy_factory: ProxyFactory
    ) -> None:
        """A stalled request times out a client with a shorter timeout."""
        registry, _, _ = pushed
        proxy = fault_proxy_factory(registry)
        proxy.add(Fault.stall(requests("GET", r"^/v2/$"), 2.0))
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{proxy.url}/v2/", timeout=0.5)
        assert httpx.get(f"{proxy.url}/v2/").status_code == 200

    @pytest.mark.parametrize("method", ["GET", "HEAD"])
    def test_serve_body_answers_like_a_registry_holding_it(
        self, pushed: tuple[Registry, str, str], fault_proxy_factory: ProxyFactory, method: str
    ) -> None:
        """serve_body answers 200 with the bytes, their length and their own digest."""
        registry, _, _ = pushed
        proxy = fault_proxy_factory(registry)
        body = b"{not json"
        proxy.add(Fault.serve_body(manifest_requests("app"), body))
        response = httpx.request(method, f"{proxy.url}/v2/app/manifests/v1")
        assert response.status_code == 200
        assert response.headers["content-length"] == str(len(body))
        assert response.headers["docker-content-digest"] == sha256_digest(body)
        assert response.content == (body if method == "GET" else b"")
        assert httpx.get(f"{proxy.url}/v2/other/manifests/v1").status_code == 404

    def test_upload_location_points_at_proxy(
        self, src_registry: Registry, fault_proxy_factory: ProxyFactory
    ) -> None:
        """A blob pushed through the proxy follows Location headers that name the proxy."""
        proxy = fault_proxy_factory(src_registry)
        data = b"x" * 300_000
        digest = sha256_digest(data)
        with httpx.Client(base_url=proxy.url) as client:
            started = client.post("/v2/up/blobs/uploads/")
            location = started.headers["location"]
            assert location.startswith(f"{proxy.url}/v2/up/blobs/uploads/")
            target = httpx.URL(location).copy_merge_params({"digest": digest})
            done = client.put(target, content=data)
            assert done.status_code == 201
        assert src_registry.has_blob(digest)
        seen = [ProxiedRequest(record.method, record.target) for record in proxy.records]
        assert sum(1 for request in seen if uploads()(request)) == 2
