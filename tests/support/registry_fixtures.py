"""Registry fixtures: real `docker-registry` processes on free loopback ports, and fault proxies.

`registry_factory(auth=..., notifications_url=..., notification_headers=...)` starts a fresh
registry (its storage in memory where it can: tests/support/scratch.py); every registry it
started is stopped and its storage deleted at the end of the session.
`src_registry` / `dst_registry` are fresh and empty for each test. `fault_proxy_factory(upstream)`
puts a fault-injecting HTTP proxy in front of a registry (stopped after the test); `serve(server)`
starts any proxy or front (a CuttingProxy, ResumingUploads...) and stops it after the test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from tests.support.copy_corpus import CopyCorpus, build_copy_corpus
from tests.support.fault_proxy import FaultProxy
from tests.support.registry_server import REGISTRY_BINARY, Registry
from tests.support.scratch import scratch_parent
from tests.support.skopeo import SKOPEO_BINARY
from tests.support.token_issuer import TokenIssuer


class Servable(Protocol):
    """A test server started and stopped in the test's thread (a proxy, an upload front)."""

    def start(self) -> object: ...

    def stop(self) -> None: ...


ServerT = TypeVar("ServerT", bound=Servable)


class Serve(Protocol):
    """Starts a server; it is stopped after the test."""

    def __call__(self, server: ServerT) -> ServerT: ...


class RegistryFactory(Protocol):
    """Starts a registry with the given options."""

    def __call__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        token_auth: dict[str, Any] | None = None,
        notifications_url: str | None = None,
        notification_headers: dict[str, str] | None = None,
    ) -> Registry: ...


def _require_tools() -> None:
    for binary in (REGISTRY_BINARY, SKOPEO_BINARY):
        if not Path(binary).exists() and shutil.which(Path(binary).name) is None:
            pytest.fail(
                f"{binary} is missing: run the project's set-up script (it apt-installs it)"
            )


@pytest.fixture(scope="session")
def registry_factory() -> Iterator[RegistryFactory]:
    """A factory of fresh registries, all stopped and deleted at the end of the session."""
    _require_tools()
    started: list[Registry] = []

    def start(
        *,
        auth: tuple[str, str] | None = None,
        token_auth: dict[str, Any] | None = None,
        notifications_url: str | None = None,
        notification_headers: dict[str, str] | None = None,
    ) -> Registry:
        registry = Registry(
            auth=auth,
            token_auth=token_auth,
            notifications_url=notifications_url,
            notification_headers=notification_headers,
            parent=scratch_parent(),
        )
        started.append(registry)
        return registry

    yield start
    for registry in started:
        registry.terminate()
    for registry in started:
        registry.cleanup()


@pytest.fixture
def src_registry(registry_factory: RegistryFactory) -> Iterator[Registry]:
    """A fresh, empty source registry for one test."""
    registry = registry_factory()
    yield registry
    registry.cleanup()


@pytest.fixture
def dst_registry(registry_factory: RegistryFactory) -> Iterator[Registry]:
    """A fresh, empty destination registry for one test."""
    registry = registry_factory()
    yield registry
    registry.cleanup()


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts servers (proxies, upload fronts); each is stopped after the test, the last
    started first."""
    servers: list[Servable] = []

    def start(server: ServerT) -> ServerT:
        server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def fault_proxy_factory(serve: Serve) -> Callable[[Registry], FaultProxy]:
    """Starts fault proxies in front of registries; each is stopped after the test."""
    return lambda upstream: serve(FaultProxy(upstream.url))


@pytest.fixture(scope="session")
def copy_corpus(
    registry_factory: RegistryFactory, tmp_path_factory: pytest.TempPathFactory
) -> CopyCorpus:
    """A source registry holding the copy tests' corpus (tests/support/copy_corpus.py); shared
    by the session, so tests only read from it."""
    registry = registry_factory()
    return build_copy_corpus(registry, tmp_path_factory.mktemp("copy-corpus"))


@pytest.fixture
def token_issuer() -> Iterator[TokenIssuer]:
    """A Docker token issuer (GET and OAuth2 POST) for one test; no users until it adds some."""
    issuer = TokenIssuer()
    yield issuer
    issuer.stop()


@pytest.fixture
def token_registry(
    registry_factory: RegistryFactory, token_issuer: TokenIssuer
) -> Iterator[Registry]:
    """A fresh registry with `auth: token` that trusts only `token_issuer`'s tokens."""
    registry = registry_factory(token_auth=token_issuer.registry_auth())
    yield registry
    registry.cleanup()
