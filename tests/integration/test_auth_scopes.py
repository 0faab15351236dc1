"""Auth state per (realm, scope): one repository's bad token realm never decides another's.

docker-registry with `auth: token` trusts the token issuer of tests/support/token_issuer.py. A
fault proxy in front of it answers one repository's requests with a 401 naming another realm (a
port nobody listens on, or a token service answering an HTML page), as a registry whose auth for
one namespace is misconfigured or whose token service is briefly broken does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import parse_qs

import pytest

from replicator.domain.auth.failures import FIRST_RETRY_SECONDS
from replicator.errors import RegistryError
from replicator.registry.client import RegistryClient, pull_scope
from replicator.registry.credentials import Credentials, StaticCredentials
from replicator.registry.pool import ClientPool
from replicator.registry.retry import RetryPolicy
from replicator.registry.settings import RegistrySettings
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.ports import free_port
from tests.support.registry_server import Registry
from tests.support.token_issuer import SERVICE, TokenIssuer

pytestmark = pytest.mark.integration

USER, PASSWORD = "robot", "robot-pa55-1"
BAD, GOOD, OTHER = "team/bad", "team/app", "team/other"


@pytest.fixture
def issuer(token_issuer: TokenIssuer) -> TokenIssuer:
    """The token issuer with one user who may pull and push anywhere."""
    token_issuer.users[USER] = PASSWORD
    return token_issuer


@pytest.fixture
def proxy(
    token_registry: Registry, fault_proxy_factory: Callable[[Registry], FaultProxy]
) -> FaultProxy:
    """A fault proxy in front of the token-auth registry."""
    return fault_proxy_factory(token_registry)


def _bad_realm(proxy: FaultProxy, realm: str, repository: str = BAD) -> None:
    """Every request for `repository` is answered 401 with a challenge naming `realm`."""
    proxy.add(
        Fault.challenge(
            requests(path_pattern=f"^/v2/{repository}/"),
            f'Bearer realm="{realm}",service="{SERVICE}",scope="repository:{repository}:pull"',
        )
    )


async def _tags(client: RegistryClient, repository: str) -> int:
    """List `repository`'s tags; the status the registry answered (404: it has none, but
    the request got past auth and reached it)."""
    response = await client.request(
        "GET", f"/v2/{repository}/tags/list", scope=pull_scope(repository), expected=(200, 404)
    )
    return response.status_code


def _settings(proxy: FaultProxy) -> RegistrySettings:
    """The registry behind `proxy`, each request and token request tried once: these tests
    count what the realms are asked once the retry policy has given up."""
    return RegistrySettings(
        host=proxy.host,
        credentials=StaticCredentials(Credentials(USER, PASSWORD)),
        retry=RetryPolicy(attempts=1),
    )


class TestRealmPerScope:
    """A realm that fails one repository fails that repository only."""

    @pytest.mark.parametrize("good_first", [False, True], ids=["bad-first", "good-first"])
    async def test_dead_realm_of_one_repository(
        self, issuer: TokenIssuer, proxy: FaultProxy, good_first: bool
    ) -> None:
        """A 401 naming a dead realm fails its repository with a temporary error; the other
        repositories of the registry (used before or not) still reach it and get tokens."""
        _bad_realm(proxy, f"http://127.0.0.1:{free_port()}/token")
        async with ClientPool() as pool:
            client = pool.client(_settings(proxy))
            if good_first:
                assert await _tags(client, GOOD) == 404
            with pytest.raises(RegistryError) as failed:
                await _tags(client, BAD)
            assert failed.value.temporary, str(failed.value)
            before = proxy.requests_seen
            assert await _tags(client, GOOD) == 404
            assert await _tags(client, OTHER) == 404
        assert proxy.requests_seen > before, "the good repositories' requests reach the registry"
        granted = {scope for r in issuer.grants("get") if r.status == 200 for scope in r.scopes}
        assert {pull_scope(GOOD), pull_scope(OTHER)} <= granted

    async def test_garbage_token_is_temporary_and_remembered(
        self, issuer: TokenIssuer, proxy: FaultProxy
    ) -> None:
        """A token service answering an HTML page fails the request with a temporary error;
        the failure is remembered for that realm and scope (asked again only after a backoff),
        and once the registry names its real realm again the repository works at once."""
        _bad_realm(proxy, f"http://127.0.0.1:{issuer.port}/garbage")
        async with ClientPool() as pool:
            client = pool.client(_settings(proxy))
            with pytest.raises(RegistryError) as failed:
                await _tags(client, BAD)
            assert failed.value.temporary, str(failed.value)
            assert len(issuer.grants("garbage")) == 1
            with pytest.raises(RegistryError) as again:
                await _tags(client, BAD)
            assert again.value.temporary, str(again.value)
            assert len(issuer.grants("garbage")) == 1, "remembered: the realm is not asked again"
            await asyncio.sleep(FIRST_RETRY_SECONDS * 1.5)
            with pytest.raises(RegistryError):
                await _tags(client, BAD)
            assert len(issuer.grants("garbage")) == 2, "asked again once the backoff is over"
            proxy.clear()
            assert await _tags(client, BAD) == 404


class TestRealmQuery:
    """A realm's own query string is part of the realm."""

    async def test_realm_query_kept(self, issuer: TokenIssuer, proxy: FaultProxy) -> None:
        """A realm `/token?mode=x` is asked with `mode=x` beside service and scope."""
        _bad_realm(proxy, f"{issuer.realm}?mode=x", repository=GOOD)
        async with ClientPool() as pool:
            client = pool.client(_settings(proxy))
            with pytest.raises(RegistryError):
                # The proxy keeps answering 401: only the token request is looked at.
                await _tags(client, GOOD)
        (asked, *_) = [r for r in issuer.grants("get") if pull_scope(GOOD) in r.scopes]
        query = parse_qs(asked.query)
        assert query["mode"] == ["x"], asked.query
        assert query["service"] == [SERVICE]
