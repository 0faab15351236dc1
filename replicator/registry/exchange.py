"""One exchange with a registry's transport: the request as we build it, and the redirects of
GET and HEAD followed without carrying our credentials to another origin or down to http.

    request = build_request("GET", url, headers)
    response = await follow_redirects(send, request, headers)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import httpx

from replicator.domain.auth.realms import Origin, is_downgrade, origin_of
from replicator.errors import RegistryError
from replicator.registry.connections import USER_AGENT
from replicator.registry.responses import describe
from replicator.registry.settings import Timeouts

_DEFAULT_TIMEOUTS = Timeouts().as_extension()
# Blob GETs answer 307 to storage backends (S3, GCS); GET and HEAD follow redirects, at most
# this many (httpx's limit). Other methods see the 3xx as it is.
MAX_REDIRECTS = 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

Content = bytes | AsyncIterator[bytes] | None


def build_request(
    method: str,
    url: str | httpx.URL,
    headers: Mapping[str, str],
    *,
    content: Content = None,
    params: Mapping[str, str] | None = None,
    timeouts: Mapping[str, float | None] = _DEFAULT_TIMEOUTS,
) -> httpx.Request:
    """A registry request: our User-Agent, the registry's `timeouts` (httpx's extension),
    `headers` as given."""
    return httpx.Request(
        method,
        url,
        headers={"User-Agent": USER_AGENT, **headers},
        content=content,
        params=params,
        extensions={"timeout": timeouts},
    )


def url_origin(url: httpx.URL) -> Origin | None:
    """The origin (scheme, host, port) of `url`, or None when it has none we reach."""
    return origin_of(str(url))


async def follow_redirects(
    send: Callable[[httpx.Request], Awaitable[httpx.Response]],
    request: httpx.Request,
    headers: dict[str, str],
) -> httpx.Response:
    """Send `request` with `send` (the transport), following the redirects of GET and HEAD.

    httpx.AsyncClient is bypassed here: its per-request work (URL merging, a cookie jar
    copied and parsed on every request and response) cost as much CPU as the exchange.
    Registries set no cookies we need; containers/image (skopeo) keeps none either.

    A redirect back to a URL already visited is a loop, and more than MAX_REDIRECTS is one
    too: both are permanent for this request (retrying a loop only repeats it)."""
    visited = {str(request.url)}
    for _ in range(MAX_REDIRECTS + 1):
        response = await send(request)
        response.request = request
        location = response.headers.get("location")
        if (
            response.status_code not in REDIRECT_STATUSES
            or request.method not in ("GET", "HEAD")
            or not location
        ):
            return response
        await response.aclose()
        target = request.url.join(location)
        source_origin, target_origin = url_origin(request.url), url_origin(target)
        if source_origin is None or target_origin is None:
            raise httpx.UnsupportedProtocol(f"redirect to {str(target)[:120]!r}", request=request)
        if is_downgrade(source_origin, target_origin):
            raise RegistryError(
                f"{describe(request.method, request.url)}: refusing a redirect from https "
                f"to {target.scheme}://{target.host}",
                status=response.status_code,
                temporary=False,
            )
        if str(target) in visited:
            raise RegistryError(
                f"{describe(request.method, request.url)}: redirect loop "
                f"({response.status_code} back to {str(target).split('?', 1)[0][:120]})",
                status=response.status_code,
                temporary=False,
            )
        visited.add(str(target))
        if target_origin != source_origin:
            # Our credentials are for the registry, never for its storage backend.
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        timeouts = request.extensions.get("timeout", _DEFAULT_TIMEOUTS)
        request = build_request(request.method, target, headers, timeouts=timeouts)
    raise RegistryError(
        f"{describe(request.method, request.url)}: redirect loop (over {MAX_REDIRECTS} redirects)",
        status=None,
        temporary=False,
    )
