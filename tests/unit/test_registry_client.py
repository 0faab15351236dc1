"""RegistryClient's own exchange: redirects of GET and HEAD, credentials kept to the registry."""

from __future__ import annotations

import pytest

from replicator.errors import RegistryError
from replicator.registry.pool import ClientPool, RegistrySettings
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
