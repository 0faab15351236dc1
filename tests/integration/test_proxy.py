"""Registries reachable only through an HTTP proxy (a real tinyproxy): CONNECT for https,
absolute-form for http, NO_PROXY, and the per-registry `proxy` setting.

The source registry is named `registry.behind-proxy.test`, a name only the proxy resolves
(tests/support/tinyproxy.py): a request that does not go through the proxy cannot connect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.engine.copier import Copier
from replicator.engine.endpoint import Endpoint
from replicator.errors import TransportError
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support.copy_cli import assert_tags_equal, run_copy
from tests.support.daemon import replicator_cli
from tests.support.images import LayerSpec, OCILayout
from tests.support.layout_push import push_over_http
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.tinyproxy import Tinyproxy
from tests.support.tls import TlsRegistry, make_pki

pytestmark = pytest.mark.integration

HIDDEN = "registry.behind-proxy.test"
ACCOUNT = "111122223333"
KIB = 1024
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without proxy variables, for tests to set their own."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small image, tag v1, in an OCI layout; its digest."""
    layout = OCILayout(tmp_path_factory.mktemp("proxy-layout"))
    built = layout.image("v1", [LayerSpec(81, 64 * KIB)], label="proxy")
    return layout.path, built.digest


@pytest.fixture(scope="module")
def proxy() -> Iterator[Tinyproxy]:
    """tinyproxy resolving `registry.behind-proxy.test` to 127.0.0.1 (nobody else does)."""
    started = Tinyproxy(hosts={HIDDEN: "127.0.0.1"})
    yield started
    started.stop()


async def _seed(plain: Registry, target: TlsRegistry) -> None:
    async with ClientPool() as pool:
        source = pool.client(RegistrySettings(host=plain.host))
        destination = pool.client(
            RegistrySettings(host=target.host, scheme="https", verify=str(target.pki.ca_file))
        )
        await Copier().copy_image(
            Endpoint(source, "app"), "v1", Endpoint(destination, "app"), tag="v1"
        )


@pytest.fixture(scope="module")
def tls_source(
    tmp_path_factory: pytest.TempPathFactory,
    registry_factory: RegistryFactory,
    layout: tuple[Path, str],
) -> Iterator[TlsRegistry]:
    """An HTTPS registry whose certificate names `registry.behind-proxy.test`, holding app:v1."""
    pki = make_pki(tmp_path_factory.mktemp("proxy-pki"), hosts=(HIDDEN,))
    plain = registry_factory()
    push_over_http(layout[0], "v1", plain.url, "app")
    registry = TlsRegistry(pki)
    try:
        asyncio.run(_seed(plain, registry))
        yield registry
    finally:
        registry.cleanup()


class TestHttpsThroughProxy:
    """`replicator copy` reaches an https registry through HTTPS_PROXY with CONNECT."""

    def test_copy_through_connect_tunnel(
        self,
        proxy: Tinyproxy,
        tls_source: TlsRegistry,
        dst_registry: Registry,
        layout: tuple[Path, str],
        no_proxy_environment: pytest.MonkeyPatch,
    ) -> None:
        """With HTTPS_PROXY set, the copy goes through a CONNECT tunnel (TLS verified inside it,
        for the registry's name) while the loopback destination is reached directly."""
        no_proxy_environment.setenv("HTTPS_PROXY", proxy.url)
        no_proxy_environment.setenv("HTTP_PROXY", proxy.url)
        _, digest = layout
        source = f"{HIDDEN}:{tls_source.port}/app:v1"
        run = run_copy(
            source, f"{dst_registry.host}/app:v1", "--src-ca-file", str(tls_source.pki.ca_file)
        )
        assert run.exit_code == 0, str(run)
        assert_tags_equal(f"{dst_registry.host}/app", {"v1": digest})
        assert f"CONNECT {HIDDEN}:{tls_source.port} HTTP/1.1" in proxy.requests()
        # Loopback is never proxied through the environment (Go's httpproxy rule).
        assert not [line for line in proxy.requests() if str(dst_registry.port) in line]

    def test_no_proxy_names_the_host_so_the_copy_goes_direct_and_fails(
        self,
        proxy: Tinyproxy,
        tls_source: TlsRegistry,
        dst_registry: Registry,
        no_proxy_environment: pytest.MonkeyPatch,
    ) -> None:
        """A host matched by NO_PROXY (here by its parent domain) is connected to directly:
        the name does not resolve outside the proxy, so the copy fails and the proxy saw
        nothing."""
        no_proxy_environment.setenv("HTTPS_PROXY", proxy.url)
        no_proxy_environment.setenv("NO_PROXY", "example.org, behind-proxy.test")
        before = len(proxy.requests())
        source = f"{HIDDEN}:{tls_source.port}/app:v1"
        run = run_copy(
            source, f"{dst_registry.host}/app:v1", "--src-ca-file", str(tls_source.pki.ca_file)
        )
        assert run.exit_code == 1, str(run)
        assert "TRANSPORT_ERROR" in run.stdout + run.stderr, str(run)
        assert len(proxy.requests()) == before


class TestPlainHttpThroughProxy:
    """A plain-http registry is reached with absolute-form requests to the proxy."""

    async def test_configured_proxy_carries_plain_http(
        self,
        proxy: Tinyproxy,
        registry_factory: RegistryFactory,
        dst_registry: Registry,
        layout: tuple[Path, str],
        no_proxy_environment: pytest.MonkeyPatch,
    ) -> None:
        """A registry's own `proxy` setting sends its requests as `GET http://host:port/...`
        through the proxy (reads and the chunked uploads of a copy alike)."""
        path, digest = layout
        source = registry_factory()
        push_over_http(path, "v1", source.url, "app")
        hidden = f"{HIDDEN}:{source.port}"
        async with ClientPool() as pool:
            src = pool.client(RegistrySettings(host=hidden, scheme="http", proxy=proxy.url))
            # The destination through the proxy too, by its loopback address: an explicit
            # proxy applies to loopback as well.
            dst = pool.client(
                RegistrySettings(host=dst_registry.host, scheme="http", proxy=proxy.url)
            )
            result = await Copier().copy_image(
                Endpoint(src, "app"), "v1", Endpoint(dst, "app"), tag="v1"
            )
        assert result.digest == digest
        assert_tags_equal(f"{dst_registry.host}/app", {"v1": digest})
        lines = proxy.requests()
        assert f"GET http://{hidden}/v2/app/manifests/{digest} HTTP/1.1" in lines
        assert any(
            line.startswith(f"PUT http://{dst_registry.host}/v2/app/manifests/v1") for line in lines
        )

    async def test_proxy_none_goes_direct(
        self,
        proxy: Tinyproxy,
        registry_factory: RegistryFactory,
        no_proxy_environment: pytest.MonkeyPatch,
    ) -> None:
        """`proxy = "none"` ignores HTTP_PROXY: the hidden name is looked up directly and
        fails, where the same settings without it go through the proxy and succeed."""
        no_proxy_environment.setenv("HTTP_PROXY", proxy.url)
        source = registry_factory()
        hidden = f"{HIDDEN}:{source.port}"
        async with ClientPool() as pool:
            direct = pool.client(RegistrySettings(host=hidden, scheme="http", proxy="none"))
            with pytest.raises(TransportError):
                await direct.request("GET", "/v2/", scope="")
        async with ClientPool() as pool:
            proxied = pool.client(RegistrySettings(host=hidden, scheme="http"))
            response = await proxied.request("GET", "/v2/", scope="")
        assert response.status_code == 200


class TestConfiguredProxy:
    """`proxy` in a registry's config, end to end through `replicator backfill`."""

    def test_backfill_from_a_source_reachable_only_through_its_proxy(
        self,
        proxy: Tinyproxy,
        registry_factory: RegistryFactory,
        dst_registry: Registry,
        layout: tuple[Path, str],
        no_proxy_environment: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        """A source configured by the name only the proxy resolves, with `proxy` set, is
        backfilled (catalog, tags, manifests, blobs through the proxy); the loopback destination,
        with `proxy = "none"`, is written directly."""
        path, digest = layout
        source = registry_factory()
        push_over_http(path, "v1", source.url, "app")
        replication = tmp_path / "replication.json"
        replication.write_text(
            json.dumps(
                {"rules": [{"destinations": [{"region": "us-west-2", "registryId": ACCOUNT}]}]}
            )
        )
        config = tmp_path / "replicator.toml"
        config.write_text(
            "\n".join(
                [
                    "version = 1",
                    "[journal]",
                    f'url = "sqlite:///{tmp_path / "journal.db"}"',
                    "[registries.src]",
                    f'account = "{ACCOUNT}"',
                    'region = "us-east-1"',
                    f'url = "http://{HIDDEN}:{source.port}"',
                    'replication = "replication.json"',
                    f'proxy = "{proxy.url}"',
                    "[registries.dst]",
                    f'account = "{ACCOUNT}"',
                    'region = "us-west-2"',
                    f'url = "{dst_registry.url}"',
                    'proxy = "none"',
                ]
            )
            + "\n"
        )
        result = replicator_cli(config, "backfill")
        assert result.returncode == 0, result.stdout + result.stderr
        assert_tags_equal(f"{dst_registry.host}/app", {"v1": digest})
        lines = proxy.requests()
        assert f"GET http://{HIDDEN}:{source.port}/v2/_catalog?n=1000 HTTP/1.1" in lines
        assert not [line for line in lines if f":{dst_registry.port}/" in line]
