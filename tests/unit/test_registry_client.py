"""RegistryClient's own exchange: redirects of GET and HEAD, credentials kept to the registry."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from replicator.errors import AuthError, RegistryError
from replicator.registry.client import RegistryClient
from replicator.registry.credentials import Credentials, StaticCredentials
from replicator.registry.pool import ClientPool
from replicator.registry.responses import DEFAULT_MAX_RESPONSE_BYTES, MAX_ERROR_BODY
from replicator.registry.retry import RetryPolicy
from replicator.registry.settings import RegistrySettings
from replicator.registry.tags import MAX_PAGE_BYTES
from replicator.registry.token_answers import MAX_TOKEN_RESPONSE
from tests.support.scripted_http import BASIC_USER, ScriptedServer
from tests.support.tls import Pki, make_pki

TOKEN = "Bearer registry-secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throw-away CA and server certificate for 127.0.0.1."""
    return make_pki(tmp_path_factory.mktemp("client-pki"))


def server_context(pki: Pki) -> ssl.SSLContext:
    """The server side of TLS with the throw-away certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    return context


class TestRedirects:
    """Blob GETs are redirected to storage backends; our Authorization never follows them."""

    async def test_cross_origin_redirect_drops_authorization(self) -> None:
        """GET redirected to another origin is followed without the Authorization header."""
        async with ScriptedServer() as registry, ScriptedServer() as storage, ClientPool() as pool:
            client = pool.client(RegistrySettings(host=registry.url.removeprefix("http://")))
            response = await client.request(
                "GET", f"/redirect?to={storage.url}/authorization", scope="repository:r:pull",
                headers={"Authorization": TOKEN},
            )  # fmt: skip
        assert response.content == b"none"
        assert str(response.request.url) == f"{storage.url}/authorization"

    async def test_same_origin_redirect_keeps_authorization(self) -> None:
        """A redirect within the registry keeps the credentials."""
        async with ScriptedServer() as registry, ClientPool() as pool:
            client = pool.client(RegistrySettings(host=registry.url.removeprefix("http://")))
            response = await client.request(
                "GET", "/redirect?to=/authorization", scope="repository:r:pull",
                headers={"Authorization": TOKEN},
            )  # fmt: skip
        assert response.content == TOKEN.encode()

    async def test_other_methods_see_the_redirect(self) -> None:
        """A POST answered 307 is not replayed elsewhere: the 3xx is the caller's to judge."""
        async with ScriptedServer() as registry, ClientPool() as pool:
            client = pool.client(RegistrySettings(host=registry.url.removeprefix("http://")))
            with pytest.raises(RegistryError) as caught:
                await client.request(
                    "POST", "/redirect?to=/echo", scope="repository:r:push", content=b"x"
                )
        assert caught.value.status == 307


# Loopback socket buffers hold a few MiB in flight: the server may have written this much past
# what the client read before the client stopped reading.
SOCKET_SLACK_BYTES = 8 * 1024 * 1024
# A capped read ends at once; reading an endless body would run into this.
CAP_SECONDS = 10.0


class TestCappedReads:
    """Nothing a registry sends is read whole before a cap applies."""

    async def test_endless_answer_is_refused_at_the_cap(self) -> None:
        """A 200 whose body never ends (a tag list, a catalog page) fails at the response cap,
        not when memory runs out; the client stopped reading near the cap."""
        async with ScriptedServer() as registry, ClientPool() as pool:
            client = pool.client(RegistrySettings(host=registry.url.removeprefix("http://")))
            async with asyncio.timeout(CAP_SECONDS):
                with pytest.raises(RegistryError, match="larger than") as caught:
                    await client.request("GET", "/endless", scope="repository:r:pull")
            assert not caught.value.temporary
            assert registry.endless_sent < DEFAULT_MAX_RESPONSE_BYTES + SOCKET_SLACK_BYTES

    async def test_endless_tag_list_is_refused_at_its_cap(self) -> None:
        """list_tags() reads at most MAX_PAGE_BYTES of a page."""
        async with ScriptedServer() as registry, ClientPool() as pool:
            client = pool.client(RegistrySettings(host=registry.url.removeprefix("http://")))
            async with asyncio.timeout(CAP_SECONDS):
                with pytest.raises(RegistryError, match="larger than"):
                    await client.request(
                        "GET", "/endless", scope="repository:r:pull", max_bytes=MAX_PAGE_BYTES
                    )
            assert registry.endless_sent < MAX_PAGE_BYTES + SOCKET_SLACK_BYTES

    async def test_endless_token_answer_is_refused_at_its_cap(self) -> None:
        """A token service whose answer never ends fails at MAX_TOKEN_RESPONSE (one try)."""
        async with ScriptedServer() as registry, ScriptedServer() as realm, ClientPool() as pool:
            client = pool.client(_settings(registry, retry=RetryPolicy(attempts=1)))
            async with asyncio.timeout(CAP_SECONDS):
                with pytest.raises(AuthError, match="too large"):
                    await client.request(
                        "GET", f"/challenge?realm={realm.url}/endless", scope="repository:r:pull"
                    )
            assert realm.endless_sent < MAX_TOKEN_RESPONSE + SOCKET_SLACK_BYTES

    async def test_endless_error_body_is_cut_at_the_error_cap(self) -> None:
        """A 500 whose body never ends becomes its typed error after MAX_ERROR_BODY bytes (one
        try)."""
        async with ScriptedServer() as registry, ClientPool() as pool:
            host = registry.url.removeprefix("http://")
            client = pool.client(RegistrySettings(host=host, retry=RetryPolicy(attempts=1)))
            async with asyncio.timeout(CAP_SECONDS):
                with pytest.raises(RegistryError) as caught:
                    await client.request("GET", "/endless-error", scope="repository:r:pull")
            assert caught.value.status == 500
            assert registry.endless_sent < MAX_ERROR_BODY + SOCKET_SLACK_BYTES


def _settings(server: ScriptedServer, **extra: Any) -> RegistrySettings:
    """The settings of a registry at `server`, with alice's credentials."""
    creds = StaticCredentials(Credentials("alice", "s3cret"))
    scheme = "https" if server.tls else "http"
    return RegistrySettings(
        host=f"{server.host}:{server.port}", scheme=scheme, credentials=creds, **extra
    )


async def _basic_mode(client: RegistryClient) -> None:
    """Make the client learn that the registry wants Basic credentials."""
    response = await client.request("GET", "/basic", scope="repository:r:pull")
    assert response.content == b"ok"


class TestCredentialsStayWithTheRegistry:
    """Credentials go only to the registry's origin and the token realms it may name."""

    async def test_challenge_from_a_redirect_target_fetches_no_token(self) -> None:
        """A 401 Bearer from the storage a blob GET was redirected to is not answered: its
        realm never sees a request, let alone our credentials."""
        async with (
            ScriptedServer() as registry,
            ScriptedServer() as storage,
            ScriptedServer() as realm,
            ClientPool() as pool,
        ):
            client = pool.client(_settings(registry))
            target = f"{storage.url}/challenge?realm={realm.url}/token"
            with pytest.raises(AuthError):
                await client.request("GET", f"/redirect?to={target}", scope="repository:r:pull")
        assert realm.token_requests == []

    async def test_realm_on_another_host_is_asked_without_credentials(self) -> None:
        """The registry's own challenge naming a realm on another host (127.0.0.2) is answered
        with a token asked anonymously: the registry's credentials never go there."""
        async with (
            ScriptedServer() as registry,
            ScriptedServer(host="127.0.0.2") as realm,
            ClientPool() as pool,
        ):
            client = pool.client(_settings(registry))
            response = await client.request(
                "GET", f"/challenge?realm={realm.url}/token", scope="repository:r:pull"
            )
        assert response.content == b"ok"
        assert realm.token_requests == ["none"]

    async def test_plain_http_realm_on_a_remote_host_is_refused(self) -> None:
        """A realm over plain http on a host that is not loopback is not asked at all, not
        even anonymously, and the error says how to trust a realm."""
        async with ScriptedServer() as registry, ClientPool() as pool:
            client = pool.client(_settings(registry))
            with pytest.raises(AuthError, match="token_realms"):
                await client.request(
                    "GET", "/challenge?realm=http://auth.example.invalid/token",
                    scope="repository:r:pull",
                )  # fmt: skip

    async def test_realm_named_in_the_config_is_used(self) -> None:
        """A realm on another host that the config names gets the credentials and the token
        works."""
        async with (
            ScriptedServer() as registry,
            ScriptedServer(host="127.0.0.2") as realm,
            ClientPool() as pool,
        ):
            client = pool.client(_settings(registry, token_realms=(f"{realm.url}/token",)))
            response = await client.request(
                "GET", f"/challenge?realm={realm.url}/token", scope="repository:r:pull"
            )
        assert response.content == b"ok"
        assert realm.token_requests == [BASIC_USER]

    async def test_realm_on_the_registry_host_is_used(self) -> None:
        """A realm on the registry's own host (another port, as distribution's token servers
        often are) gets the credentials."""
        async with ScriptedServer() as registry, ScriptedServer() as realm, ClientPool() as pool:
            client = pool.client(_settings(registry))
            response = await client.request(
                "GET", f"/challenge?realm={realm.url}/token", scope="repository:r:pull"
            )
        assert response.content == b"ok"
        assert realm.token_requests == [BASIC_USER]

    async def test_plain_http_realm_of_an_https_registry_is_refused(self, pki: Pki) -> None:
        """An https registry naming a plain-http realm (same host) gets no token request."""
        async with (
            ScriptedServer(tls=server_context(pki)) as registry,
            ScriptedServer() as realm,
            ClientPool() as pool,
        ):
            client = pool.client(_settings(registry, verify=str(pki.ca_file)))
            with pytest.raises(AuthError, match="plain http"):
                await client.request(
                    "GET", f"/challenge?realm={realm.url}/token", scope="repository:r:pull"
                )
        assert realm.token_requests == []

    async def test_cross_origin_location_gets_no_authorization(self) -> None:
        """An absolute upload Location (or Link) on another origin is sent no credentials."""
        async with ScriptedServer() as registry, ScriptedServer() as other, ClientPool() as pool:
            client = pool.client(_settings(registry))
            await _basic_mode(client)
            answer = await client.request(
                "POST", f"/location?to={other.url}/authorization", scope="r", expected=(202,)
            )
            location = answer.headers["location"]
            response = await client.request("GET", location, scope="repository:r:pull")
            same = await client.request(
                "GET", f"{registry.url}/authorization", scope="repository:r:pull"
            )
        assert response.content == b"none"
        assert same.content == BASIC_USER.encode()

    async def test_https_to_http_location_is_refused(self, pki: Pki) -> None:
        """An https registry's Location pointing at plain http is refused, not followed."""
        async with (
            ScriptedServer(tls=server_context(pki)) as registry,
            ScriptedServer() as other,
            ClientPool() as pool,
        ):
            client = pool.client(_settings(registry, verify=str(pki.ca_file)))
            with pytest.raises(RegistryError, match="https"):
                await client.request("PUT", f"{other.url}/authorization", scope="r", content=b"x")

    async def test_https_to_http_redirect_is_refused(self, pki: Pki) -> None:
        """A blob GET redirected from https to plain http is refused, not followed."""
        async with (
            ScriptedServer(tls=server_context(pki)) as registry,
            ScriptedServer() as storage,
            ClientPool() as pool,
        ):
            client = pool.client(_settings(registry, verify=str(pki.ca_file)))
            with pytest.raises(RegistryError, match="https"):
                await client.request(
                    "GET", f"/redirect?to={storage.url}/authorization", scope="repository:r:pull"
                )
