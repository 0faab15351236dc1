"""One RegistryClient per registry, each with its own HTTP connection pool.

A pool per registry, so each registry's connection limit follows its request slots
(`workers.per_registry`) and a slow registry's connections never crowd out another's.
"""

from __future__ import annotations

import os
from types import TracebackType

import httpx

from replicator.errors import ConfigError
from replicator.registry.client import RegistryClient
from replicator.registry.connections import USER_AGENT, new_http_client, new_transport
from replicator.registry.http.proxy import ProxySettings, ProxyUrlError
from replicator.registry.observer import RequestObserver
from replicator.registry.settings import RegistrySettings


def proxy_settings(configured: str | None) -> ProxySettings:
    """A registry's own proxy setting, else the environment's (read at each client's creation,
    so a test or a re-exec sees the current environment)."""
    try:
        if configured is not None:
            return ProxySettings.configured(configured)
        return ProxySettings.from_environment(os.environ)
    except ProxyUrlError as exc:
        where = "proxy" if configured is not None else "HTTPS_PROXY/HTTP_PROXY"
        raise ConfigError(f"{where}: {exc}") from exc


# Connections the pool may open across its registries, at the least, and per blob transfer
# allowed at once: a transfer holds a source and a destination connection, with room left for
# the HEADs and token requests around it.
MIN_CONNECTIONS = 64
CONNECTIONS_PER_TRANSFER = 4


class ClientPool:
    """Owns the httpx clients; use as an async context manager so connections close cleanly."""

    def __init__(
        self,
        *,
        max_connections: int = MIN_CONNECTIONS,
        observer: RequestObserver | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self._max_connections = max_connections
        self._observer = observer
        # What every request says it is: replication's own (domain/events/echoes.py) lets a
        # registry's events tell its replicas from pushes.
        self._user_agent = user_agent
        self._http: list[httpx.AsyncClient] = []
        self._clients: dict[str, RegistryClient] = {}

    @classmethod
    def sized_for(
        cls,
        concurrency: int,
        *,
        observer: RequestObserver | None = None,
        user_agent: str = USER_AGENT,
    ) -> ClientPool:
        """A pool with room for `concurrency` blob transfers at once."""
        return cls(
            max_connections=max(MIN_CONNECTIONS, concurrency * CONNECTIONS_PER_TRANSFER),
            observer=observer,
            user_agent=user_agent,
        )

    def client(self, settings: RegistrySettings) -> RegistryClient:
        """The client for `settings.host`, created on first use from this record (its
        connection pool from the TLS, proxy and slot settings; the client takes the record
        whole); later calls with another credential source (a reload rotated a password)
        switch to it."""
        existing = self._clients.get(settings.host)
        if existing is not None:
            if existing.credentials != settings.credentials:
                existing.replace_credentials(settings.credentials)
            return existing
        transport = new_transport(
            verify=settings.verify,
            cert=settings.cert,
            proxies=proxy_settings(settings.proxy),
            # Connections beyond the request slots would only idle: a few spare for redirects
            # to storage backends (S3) that answer blob GETs.
            max_connections=min(self._max_connections, settings.max_in_flight * 2),
        )
        http = new_http_client(transport, settings.timeouts.as_extension())
        self._http.append(http)
        client = RegistryClient(
            http,
            settings,
            transport=transport,
            observer=self._observer,
            user_agent=self._user_agent,
        )
        self._clients[settings.host] = client
        return client

    async def aclose(self) -> None:
        """Close every HTTP connection."""
        for http in self._http:
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
