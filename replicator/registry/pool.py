"""One RegistryClient per registry, sharing HTTP connection pools between same-TLS registries."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

import httpx

from replicator.registry.auth import Credentials
from replicator.registry.client import DEFAULT_MAX_IN_FLIGHT, RegistryClient, new_http_client


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """How to reach one registry: host, scheme (None = Docker's loopback rule), auth and TLS."""

    host: str
    scheme: str | None = None
    credentials: Credentials | None = field(default=None, repr=False)
    verify: bool | str = True  # False, True, or a CA bundle path
    cert: tuple[str, str] | None = None  # client certificate and key for mTLS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT


class ClientPool:
    """Owns the httpx clients; use as an async context manager so connections close cleanly."""

    def __init__(self, *, max_connections: int = 64) -> None:
        self._max_connections = max_connections
        self._http: dict[tuple[bool | str, tuple[str, str] | None], httpx.AsyncClient] = {}
        self._clients: dict[str, RegistryClient] = {}

    def client(self, settings: RegistrySettings) -> RegistryClient:
        """The client for `settings.host`, created on first use with these settings."""
        existing = self._clients.get(settings.host)
        if existing is not None:
            return existing
        tls_key = (settings.verify, settings.cert)
        http = self._http.get(tls_key)
        if http is None:
            http = new_http_client(
                verify=settings.verify, cert=settings.cert, max_connections=self._max_connections
            )
            self._http[tls_key] = http
        client = RegistryClient(
            http,
            settings.host,
            scheme=settings.scheme,
            credentials=settings.credentials,
            max_in_flight=settings.max_in_flight,
        )
        self._clients[settings.host] = client
        return client

    async def aclose(self) -> None:
        """Close every HTTP connection."""
        for http in self._http.values():
            await http.aclose()
        self._http.clear()
        self._clients.clear()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
