"""Tag lists and the catalog, following `Link` pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator

from replicator.errors import NotFoundError, RegistryError
from replicator.registry.client import RegistryClient, link_next, pull_scope

# Page size asked of the registry; distribution caps `n` at 1000 by default.
PAGE_SIZE = 1000


async def _pages(
    client: RegistryClient, path: str, key: str, scope: str
) -> AsyncIterator[list[str]]:
    next_path: str | None = f"{path}?n={PAGE_SIZE}"
    while next_path:
        resp = await client.request("GET", next_path, scope=scope)
        try:
            doc = resp.json()
        except ValueError as exc:
            raise RegistryError(
                f"{client.host}{path}: answer is not JSON", status=resp.status_code
            ) from exc
        items = doc.get(key) if isinstance(doc, dict) else None
        yield [str(i) for i in items or [] if isinstance(i, str)]
        next_path = link_next(resp)


async def list_tags(client: RegistryClient, repository: str) -> list[str]:
    """Every tag of a repository (empty when the repository does not exist)."""
    tags: list[str] = []
    try:
        async for page in _pages(
            client, f"/v2/{repository}/tags/list", "tags", pull_scope(repository)
        ):
            tags.extend(page)
    except NotFoundError:
        return []
    return tags


async def catalog(client: RegistryClient, prefix: str = "") -> AsyncIterator[str]:
    """Repositories of the registry, in the registry's order, filtered by path prefix."""
    async for page in _pages(client, "/v2/_catalog", "repositories", "registry:catalog:*"):
        for name in page:
            if not prefix or name == prefix or name.startswith(prefix.rstrip("/") + "/"):
                yield name
