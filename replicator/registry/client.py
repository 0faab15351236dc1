"""The request core of the registry client: base URL, auth, per-registry limit, typed errors.

How a registry is reached (pool, TLS) is in `connections`; one exchange and its redirects in
`exchange`; reading an answer within its cap in `responses`.

Resource operations live beside it, one module per registry resource: `manifests`, `blobs`,
`blob_uploads`, `tags` (tags and catalog), `referrers`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

import httpx

from replicator.domain.auth.realms import Origin, is_downgrade, origin_of
from replicator.domain.images.refs import is_loopback_host, registry_endpoint
from replicator.errors import AuthError, InvalidReferenceError, RegistryError, TransportError
from replicator.registry.auth import Authenticator
from replicator.registry.bandwidth import Bandwidth
from replicator.registry.connections import USER_AGENT, tls_error, unreachable_hint
from replicator.registry.credentials import CredentialProvider
from replicator.registry.exchange import Content, build_request, follow_redirects, url_origin
from replicator.registry.held_slots import HELD
from replicator.registry.links import next_link
from replicator.registry.observer import RequestObserver
from replicator.registry.responses import (
    DEFAULT_MAX_RESPONSE_BYTES,
    describe,
    raise_for_status,
    read_capped,
)
from replicator.registry.retry import RetryIf, retries, under_policy, whole
from replicator.registry.settings import RegistrySettings

T = TypeVar("T")

# Small requests (HEADs, manifests, upload POSTs and PUTs, tag lists) in flight per registry, per
# transfer slot. A registry answers one in about a millisecond, so over a WAN it spends its time
# on the wire: sharing the 8 transfer slots, a copy 25 ms away was capped at 8 / 50 ms = 160
# requests/s and spent most of its time waiting for a slot (bench/copy_bench.py, 2026-11-29).
SMALL_REQUESTS_PER_SLOT = 4
# URL path segments that URL normalisation resolves (RFC 3986 5.2.4), written or %-encoded:
# a path holding one would reach another repository than the one named.
_DOT_SEGMENTS = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})


class RegistryClient:
    """One registry: `host[:port]` reached over an injected httpx.AsyncClient."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: RegistrySettings,
        *,
        transport: httpx.AsyncBaseTransport,
        observer: RequestObserver | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        # The record it was built from, whole: how the registry is reached is read from here.
        self.settings = settings
        self.http = http
        self.user_agent = user_agent
        self._observer = observer
        self._transport = transport
        self._timeouts = settings.timeouts.as_extension()
        self.host = host = settings.host
        # Docker talks plain HTTP to loopback registries and HTTPS to everything else; so do we.
        self.scheme = settings.scheme or ("http" if is_loopback_host(host) else "https")
        # Docker Hub: `docker.io` names the registry, `registry-1.docker.io` serves it.
        self.base_url = f"{self.scheme}://{registry_endpoint(host)}"
        origin = origin_of(self.base_url)
        if origin is None:
            raise InvalidReferenceError(f"{host!r} is not a registry host")
        # Our credentials go to this origin only (domain/auth/realms.py).
        self.origin: Origin = origin
        self._own_prefix = self.base_url + "/"
        self._auth = Authenticator(
            http,
            settings.credentials,
            registry=self.origin,
            token_realms=settings.token_realms,
            retry=settings.retry,
        )
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._small = asyncio.Semaphore(settings.max_in_flight * SMALL_REQUESTS_PER_SLOT)
        self.referrers_api: bool | None = None  # learned on first use
        # An ECR registry: repositories are listed and created through ECR's own API.
        self.ecr = settings.ecr
        # The limit on blob bytes to and from it (`max_bandwidth`), shared by all its transfers.
        self.bandwidth = (
            Bandwidth(settings.max_bandwidth) if settings.max_bandwidth is not None else None
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url})"

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of this registry's transfer slots (re-entrant within a task: the requests
        of a transfer run in its slot); a registry error raised while it is held names this
        registry's host."""
        held = HELD.get()
        with self._attributed():
            if self.host in held:
                yield
                return
            async with self._slots:
                token = HELD.set(held | {self.host})
                try:
                    yield
                finally:
                    HELD.reset(token)

    @asynccontextmanager
    async def _request_slot(self, *, bulk: bool) -> AsyncIterator[None]:
        """A transfer slot for a `bulk` request (a blob's body), else a small-request slot; none
        when the task holds a transfer slot here already (a request of that transfer)."""
        if bulk or self.host in HELD.get():
            async with self.slot():
                yield
            return
        with self._attributed():
            async with self._small:
                yield

    def url(self, path: str) -> str:
        """An absolute URL: `path` as given when absolute (upload Locations), else under base.

        A relative path is built by us from names; one with a `.` or `..` segment would be
        resolved to another repository by URL normalisation, so it is refused here whatever
        let the name through."""
        if path.startswith(("http://", "https://")):
            return path
        segments = path.split("?", 1)[0].split("/")
        if any(segment.lower() in _DOT_SEGMENTS for segment in segments):
            raise InvalidReferenceError(
                f"{self.host}: refusing a request path with a '.' or '..' segment: {path[:120]!r}"
            )
        return self.base_url + path

    @property
    def credentials(self) -> CredentialProvider | None:
        """Where this registry's credentials come from."""
        return self._auth.provider

    def replace_credentials(self, provider: CredentialProvider | None) -> None:
        """Switch to another credential source (a reload changed it), from the next request."""
        self._auth.replace_credentials(provider)

    @asynccontextmanager
    async def _exchange(
        self,
        method: str,
        url: str,
        *,
        bulk: bool,
        scope: str,
        headers: Mapping[str, str] | None,
        content: Content,
        params: Mapping[str, str] | None,
        stream: bool,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> AsyncIterator[httpx.Response]:
        """The response to one request, its request slot held while the caller has it.

        A token is fetched outside the slot (before the request, or between a 401 and the
        request's replay): a token fetch is a wait, which gives the job's destination slot back
        (registry/wait_scope.py), and a task waiting to take that slot again must hold no
        request slot another job's task could be waiting for."""
        replayable = not isinstance(content, AsyncIterator)
        # An absolute URL the registry gave us (an upload Location, a Link) may be elsewhere:
        # it gets no credentials, and never takes us from https down to http.
        own = self._own(url, method)
        with self._attributed():
            sent_auth = await self._auth.authorization(scope) if own else None
        for attempt in (1, 2):
            async with self._request_slot(bulk=bulk):
                response = await self._attempt(
                    method, url, sent_auth, headers=headers, content=content, params=params
                )
                if not (
                    response.status_code == 401
                    and attempt == 1
                    and replayable
                    # Only the registry's own challenge is answered: a 401 from where a
                    # redirect or a Location led us would send our credentials to its realm.
                    and url_origin(response.request.url) == self.origin
                ):
                    if not stream:
                        try:
                            response = await read_capped(response, max_bytes)
                        except (httpx.HTTPError, ssl.SSLError) as exc:
                            raise TransportError(
                                f"{describe(method, response.request.url)}: {type(exc).__name__}"
                            ) from exc
                    yield response
                    return
                await response.aclose()
            # One forced refresh: the token expired or this scope had none yet.
            with self._attributed():
                sent_auth = await self._auth.answer(response, scope)
        raise AssertionError("unreachable: the loop yields or raises")

    async def _attempt(
        self,
        method: str,
        url: str,
        sent_auth: str | None,
        *,
        headers: Mapping[str, str] | None,
        content: Content,
        params: Mapping[str, str] | None,
    ) -> httpx.Response:
        """Send the request once (its redirects followed), transport failures typed."""
        all_headers = {"User-Agent": self.user_agent, **(headers or {})}
        if sent_auth:
            all_headers["Authorization"] = sent_auth
        request = build_request(
            method, url, all_headers, content=content, params=params, timeouts=self._timeouts
        )
        try:
            return await follow_redirects(self._observed, request, all_headers)
        # A TLS alert read after the handshake (a refused client certificate, under TLS 1.3)
        # comes as ReadError caused by ssl.SSLError; a raw ssl.SSLError is caught too.
        except (httpx.HTTPError, ssl.SSLError) as exc:
            where = describe(method, request.url)
            raise tls_error(where, exc) or TransportError(
                f"{where}: {type(exc).__name__}: {exc}{unreachable_hint(exc)}"
            ) from exc

    def _own(self, url: str, method: str) -> bool:
        """Whether `url` is at the registry's own origin; refuses a move from https to http."""
        if url.startswith(self._own_prefix):  # the paths we build: no parsing needed
            return True
        target = origin_of(url)
        if target == self.origin:
            return True
        if target is None or is_downgrade(self.origin, target):
            raise RegistryError(
                f"{method} {self.host}: refusing to follow the registry from {self.scheme} to "
                f"{url.split('?', 1)[0][:120]}",
                temporary=False,
            )
        return False

    async def _check(self, response: httpx.Response, expected: tuple[int, ...]) -> None:
        """raise_for_status, naming why we had no credentials when that is why we were refused
        (a credential helper that failed, or a token realm on another host they were kept
        from, where anonymous access was not enough)."""
        try:
            await raise_for_status(response, expected)
        except AuthError as exc:
            if self._auth.withheld_from is not None:
                raise self._auth.withheld_refusal(exc, self._auth.withheld_from) from exc
            problem = self._auth.problem
            if problem is None:
                raise self._auth.refusal(exc) from exc
            raise AuthError(
                f"{exc}; and no credentials: {problem}",
                status=exc.status,
                error_codes=exc.error_codes,
                temporary=problem.temporary,
            ) from exc

    @contextmanager
    def _attributed(self) -> Iterator[None]:
        """A registry error raised within names this client's host (retries are counted per
        registry from it)."""
        try:
            yield
        except RegistryError as exc:
            if exc.host is None:
                exc.host = self.host
            raise

    async def _observed(self, request: httpx.Request) -> httpx.Response:
        """One exchange on the transport, reported to the observer (the one instrumented
        place: every registry request passes here)."""
        if self._observer is None:
            return await self._transport.handle_async_request(request)
        started = time.monotonic()
        status: int | None = None
        try:
            response = await self._transport.handle_async_request(request)
            status = response.status_code
            return response
        finally:
            self._observer.request_done(
                self.host, request.method, status, time.monotonic() - started
            )

    async def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        expected: tuple[int, ...] = (200,),
        headers: Mapping[str, str] | None = None,
        content: Content = None,
        params: Mapping[str, str] | None = None,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: bool | RetryIf | None = None,
    ) -> httpx.Response:
        """Send one request, body read (at most `max_bytes` of a success, MAX_ERROR_BODY of a
        failure), and raise the typed error unless `expected`.

        A temporary failure is tried again under the registry's retry policy (settings.retry):
        GET and HEAD always, another method when the caller says repeating it is safe (`retry`),
        never a streamed body nor a request of an operation retried whole (retry.retries). The
        slot is held per try, never during the wait between tries."""
        url = self.url(path)

        async def once() -> httpx.Response:
            async with self._exchange(
                method,
                url,
                bulk=False,
                scope=scope,
                headers=headers,
                content=content,
                params=params,
                stream=False,
                max_bytes=max_bytes,
            ) as response:
                await self._check(response, expected)
                return response

        if not retries(method, streamed=isinstance(content, AsyncIterator), retry=retry):
            return await once()
        only = None if isinstance(retry, bool) or retry is None else retry
        return await under_policy(self.settings.retry, once, only=only)

    async def retried(self, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation` — a request whose body the caller reads (a manifest GET through
        `stream`) — retried whole under this registry's policy."""
        return await whole(self.settings.retry, operation)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        expected: tuple[int, ...] = (200,),
        headers: Mapping[str, str] | None = None,
        bulk: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed response, holding a slot until the body is consumed or abandoned: a
        transfer slot, unless the caller says the body is small (`bulk=False`, a manifest).

        Not tried again here: the caller reads the body, so the caller's rule covers the whole
        (`retried` for a manifest, the resumed read of a blob: registry/blob_reads.py)."""
        url = self.url(path)
        async with self._exchange(
            method, url, bulk=bulk, scope=scope, headers=headers, content=None, params=None,
            stream=True,
        ) as response:  # fmt: skip
            try:
                await self._check(response, expected)
                yield response
            except (httpx.HTTPError, ssl.SSLError) as exc:
                # The caller reading the body (a manifest, a blob) lost the connection.
                where = describe(method, response.request.url)
                raise TransportError(f"{where}: {type(exc).__name__}: {exc}") from exc
            finally:
                await response.aclose()


def pull_scope(repository: str) -> str:
    """Token scope to read a repository."""
    return f"repository:{repository}:pull"


def push_scope(repository: str, *, mount_from: str | None = None) -> str:
    """Token scope to write a repository (and read the mount source, for a cross-repo mount)."""
    scope = f"repository:{repository}:pull,push"
    if mount_from and mount_from != repository:
        scope += f" repository:{mount_from}:pull"
    return scope


def delete_scope(repository: str) -> str:
    """Token scope to delete from a repository (distribution wants `delete`, others `*`)."""
    return f"repository:{repository}:delete,pull,push"


def link_next(response: httpx.Response) -> str | None:
    """The next page from an RFC 8288 `Link: <url>; rel="next"` header, if any."""
    return next_link(response.headers.get("link"))
