"""Tag lists and the catalog, following `Link` pagination.

Every name a registry lists is checked against the OCI grammar before anyone sees it: names go
into URL paths, and one like `releases/x/../internal` (or a tag `v1/../../other/manifests/v1`)
would be resolved by URL normalisation to another repository, past the policy that judged the
name as given. An invalid name is logged, handed to `on_invalid` for the caller's summary, and
skipped. Where the registry is ECR (no catalog), ECR's own API lists repositories and tags.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from replicator.domain.images.refs import validate_repository, validate_tag
from replicator.errors import (
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
    TlsError,
    TransportError,
)
from replicator.logs import get_logger
from replicator.registry.client import RegistryClient, link_next, pull_scope

log = get_logger(__name__)

# Page size asked of the registry; distribution caps `n` at 1000 by default.
PAGE_SIZE = 1000
# A page of PAGE_SIZE names of at most 255 characters, JSON-quoted: ~260 KiB; twice that
# leaves room for registries that ignore `n` a little, and refuses one streaming without end.
MAX_PAGE_BYTES = 4 * 1024 * 1024
# Pages of one listing: a registry whose `Link` never ends would otherwise page for ever.
# 100,000 pages of 1000 names is ten times the largest registry we know of.
MAX_PAGES = 100_000

InvalidName = Callable[[str], None]


async def _pages(
    client: RegistryClient, path: str, key: str, scope: str
) -> AsyncIterator[list[str]]:
    """The items under `key` of each page of the listing at `path`; each page's GET is tried
    again on its own by the client (a temporary error does not start the listing over)."""
    next_path: str | None = f"{path}?n={PAGE_SIZE}"
    pages = 0
    while next_path:
        pages += 1
        if pages > MAX_PAGES:
            raise RegistryError(
                f"{client.host}{path}: more than {MAX_PAGES} pages", temporary=False
            )
        items, next_path = await _page(client, path, next_path, key, scope)
        yield items


async def _page(
    client: RegistryClient, path: str, page: str, key: str, scope: str
) -> tuple[list[str], str | None]:
    """The items under `key` of the page `page` of the listing at `path`, and the next page."""
    resp = await client.request("GET", page, scope=scope, max_bytes=MAX_PAGE_BYTES)
    try:
        doc = resp.json()
    except ValueError as exc:
        raise RegistryError(
            f"{client.host}{path}: answer is not JSON", status=resp.status_code
        ) from exc
    items = doc.get(key) if isinstance(doc, dict) else None
    listed = [str(i) for i in items or [] if isinstance(i, str)] if isinstance(items, list) else []
    return listed, link_next(resp)


def _valid(
    client: RegistryClient,
    names: list[str],
    validate: Callable[[str], str],
    where: str,
    on_invalid: InvalidName | None,
) -> list[str]:
    valid = []
    for name in names:
        try:
            valid.append(validate(name))
        except InvalidReferenceError as exc:
            message = f"{client.host}: {where} lists an invalid name, skipped: {exc}"
            log.warning("registry_name_invalid", host=client.host, where=where, error=str(exc))
            if on_invalid is not None:
                on_invalid(message)
    return valid


async def tag_pages(
    client: RegistryClient,
    repository: str,
    *,
    on_invalid: InvalidName | None = None,
) -> AsyncIterator[list[str]]:
    """The valid tags of a repository a page at a time, as the registry pages them (none when
    the repository does not exist): a scan holds one page, whatever the number of tags."""
    if client.ecr is not None:
        listed = await client.ecr.tags(repository)
        yield _valid(client, listed, validate_tag, f"{repository} ListImages", on_invalid)
        return
    where = f"{repository} tag list"
    try:
        async for page in _pages(
            client, f"/v2/{repository}/tags/list", "tags", pull_scope(repository)
        ):
            yield _valid(client, page, validate_tag, where, on_invalid)
    except NotFoundError:
        return


async def first_tags(client: RegistryClient, repository: str, size: int) -> tuple[list[str], bool]:
    """The first page of `size` valid tags of a repository (none when it does not exist) and
    whether the registry lists more (all of them at once on ECR)."""
    if client.ecr is not None:
        listed = await client.ecr.tags(repository)
        return _valid(client, listed, validate_tag, f"{repository} ListImages", None), False
    path = f"/v2/{repository}/tags/list"
    try:
        page, more = await _page(client, path, f"{path}?n={size}", "tags", pull_scope(repository))
    except NotFoundError:
        return [], False
    return _valid(client, page, validate_tag, f"{repository} tag list", None), more is not None


async def list_tags(
    client: RegistryClient, repository: str, *, on_invalid: InvalidName | None = None
) -> list[str]:
    """Every valid tag of a repository (empty when the repository does not exist)."""
    tags: list[str] = []
    async for page in tag_pages(client, repository, on_invalid=on_invalid):
        tags.extend(page)
    return tags


async def repository_absent(client: RegistryClient, repository: str) -> bool:
    """Whether the registry says the repository does not exist (its tag list answers 404):
    then it holds no manifest, and a copy into it need not ask for each manifest and blob.
    (distribution answers 404 NAME_UNKNOWN also for a repository holding only blobs, left by
    an interrupted copy: those are then uploaded again, which is safe, only not free.) False
    when unsure: an ECR registry (repositories are created apart from their images)."""
    if client.ecr is not None:
        return False
    try:
        # Only the status matters: the body (a page of tags) is left unread.
        async with client.stream(
            "GET", f"/v2/{repository}/tags/list?n=1", scope=pull_scope(repository), bulk=False
        ):
            return False
    except NotFoundError:
        return True
    except RegistryError:
        # A registry refusing or failing the tag list (a token without list rights, a proxy
        # blocking the path) still takes the copy: it asks for each manifest and blob instead.
        return False


async def catalog(
    client: RegistryClient, prefix: str = "", *, on_invalid: InvalidName | None = None
) -> AsyncIterator[str]:
    """Valid repository names of the registry, in its order, filtered by path prefix."""
    if client.ecr is not None:
        listed = await client.ecr.repositories()
        for name in _valid(client, listed, validate_repository, "DescribeRepositories", on_invalid):
            if under_prefix(name, prefix):
                yield name
        return
    pages = _pages(client, "/v2/_catalog", "repositories", "registry:catalog:*")
    while True:
        try:
            page = await anext(pages)
        except StopAsyncIteration:
            return
        except (TlsError, TransportError):
            raise
        except RegistryError as exc:
            if exc.temporary:
                raise
            # Docker Hub, GHCR, ECR, Quay and GAR list no catalog (404, 401, 403): the
            # repositories have to be named.
            raise type(exc)(
                f"{client.host} lists no repositories ({exc}); name them: "
                "`repositories = [...]` under [registries.<name>] in the config, or "
                "--repository NAME / --repositories-from FILE",
                status=exc.status,
                error_codes=exc.error_codes,
                temporary=False,
            ) from exc
        for name in _valid(client, page, validate_repository, "catalog", on_invalid):
            if under_prefix(name, prefix):
                yield name


def under_prefix(name: str, prefix: str) -> bool:
    """Whether `name` is `prefix` or lies under it (`prefix/...`); every name is under ''."""
    return not prefix or name == prefix or name.startswith(prefix.rstrip("/") + "/")


async def repository_exists(client: RegistryClient, repository: str) -> bool:
    """Whether the repository exists: ECR says so itself (an empty repository has no tags but
    exists); elsewhere, having a tag is what existing means."""
    if client.ecr is not None:
        return await client.ecr.repository_exists(repository)
    return bool(await list_tags(client, repository))


async def ensure_repository(client: RegistryClient, repository: str) -> bool:
    """Create the repository where the registry does not on push (ECR); True if created."""
    if client.ecr is None:
        return False  # distribution and the others create a repository with its first push
    return await client.ecr.create_repository(repository)
