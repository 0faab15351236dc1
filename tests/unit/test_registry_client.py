"""RegistryClient's own exchange: redirects of GET and HEAD, credentials kept to the registry."""

from __future__ import annotations

import asyncio

import pytest

from replicator.errors import RegistryError
from replicator.registry.client import DEFAULT_MAX_RESPONSE_BYTES
from replicator.registry.pool import ClientPool, RegistrySettings
from replicator.registry.responses import MAX_ERROR_BODY
from replicator.registry.tags import MAX_PAGE_BYTES
from tests.support.scripted_http import ScriptedServer

TOKEN = "Bearer registry-secret"


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

    async def test_endless_error_body_is_cut_at_the_error_cap(self) -> None:
        """A 500 whose body never ends becomes its typed error after MAX_ERROR_BODY bytes."""
        async with ScriptedServer() as registry, ClientPool() as pool:
            client = pool.client(RegistrySettings(host=registry.url.removeprefix("http://")))
            async with asyncio.timeout(CAP_SECONDS):
                with pytest.raises(RegistryError) as caught:
                    await client.request("GET", "/endless-error", scope="repository:r:pull")
            assert caught.value.status == 500
            assert registry.endless_sent < MAX_ERROR_BODY + SOCKET_SLACK_BYTES
