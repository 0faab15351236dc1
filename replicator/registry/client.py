"""The request core of the registry client: base URL, auth, per-registry limit, typed errors.

Resource operations live beside it, one module per registry resource: `manifests`, `blobs`,
`uploads`, `tags` (tags and catalog), `referrers`.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

import httpx

from replicator.domain.realms import Origin, is_downgrade, origin_of
from replicator.domain.refs import is_loopback_host, registry_endpoint
from replicator.errors import (
    AuthError,
    InvalidReferenceError,
    RegistryError,
    TlsError,
    TransportError,
)
from replicator.registry.auth import Authenticator
from replicator.registry.credentials import CredentialProvider
from replicator.registry.ecr import EcrApi
from replicator.registry.http.proxy import ProxySettings
from replicator.registry.http.transport import RegistryTransport
from replicator.registry.links import next_link
from replicator.registry.observer import RequestObserver
from replicator.registry.responses import MAX_ERROR_BODY, describe, raise_for_status

# Registries a task already holds a request slot on, so nested requests of one transfer (GET from
# the source while uploading to the destination) never wait on a slot their own task holds.
_HELD: ContextVar[frozenset[str]] = ContextVar("replicator_held_slots", default=frozenset())
# Default blob transfers in flight per registry: distribution and most cloud registries throttle
# well above this, and more than ~8 parallel streams gain nothing on one TCP path.
DEFAULT_MAX_IN_FLIGHT = 8
# Small requests (HEADs, manifests, upload POSTs and PUTs, tag lists) in flight per registry, per
# transfer slot. A registry answers one in about a millisecond, so over a WAN it spends its time
# on the wire: sharing the 8 transfer slots, a copy 25 ms away was capped at 8 / 50 ms = 160
# requests/s and spent most of its time waiting for a slot (bench/copy_bench.py, 2026-11-29).
SMALL_REQUESTS_PER_SLOT = 4
# Connect fast-fail; reads may legitimately stall while a registry hashes a large upload.
HTTP_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=None)
_TIMEOUTS = HTTP_TIMEOUT.as_dict()
# Blob GETs answer 307 to storage backends (S3, GCS); GET and HEAD follow redirects, at most
# this many (httpx's limit). Other methods see the 3xx as it is.
MAX_REDIRECTS = 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "replicator"
# What a request() reads of a successful answer unless its caller says more: answers that are
# not documents (HEAD, PUT, POST of an upload) carry a few hundred bytes; tag lists, catalog
# pages and referrers name their own caps. Nothing a registry sends is read past a cap.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
# URL path segments that URL normalisation resolves (RFC 3986 5.2.4), written or %-encoded:
# a path holding one would reach another repository than the one named.
_DOT_SEGMENTS = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})

Content = bytes | AsyncIterator[bytes] | None


def _request(
    method: str,
    url: str | httpx.URL,
    headers: Mapping[str, str],
    *,
    content: Content = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Request:
    return httpx.Request(
        method,
        url,
        headers={"User-Agent": USER_AGENT, **headers},
        content=content,
        params=params,
        extensions={"timeout": _TIMEOUTS},
    )


def _origin(url: httpx.URL) -> Origin | None:
    return origin_of(str(url))


@functools.cache
def _tls_context(verify: bool | str, cert: tuple[str, str] | None) -> ssl.SSLContext:
    """One SSL context per (verify, client certificate): loading the system CAs costs ~40 ms
    and a context is safe to share between connections. `verify=False` checks nothing."""
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(*cert)
    return context


def new_transport(
    *,
    verify: bool | str = True,
    cert: tuple[str, str] | None = None,
    max_connections: int = 64,
    proxies: ProxySettings | None = None,
) -> RegistryTransport:
    """The connection pool of one registry (HTTP/1.1 on asyncio streams): httpcore cost ~1 ms
    of our CPU per request, mostly scanning its pool, which made a catalog scan CPU-bound.

    The system CAs are loaded at the first HTTPS connection, so a process that only reaches
    plain-HTTP registries (loopback, a private network) never pays their ~40 ms at start. A CA
    bundle or client certificate the operator named is loaded at once: a wrong file fails here
    rather than as a connection error retried for ever (the config check names it first).
    """
    if isinstance(verify, str) or cert is not None:
        context = _tls_context(verify, cert)
        return RegistryTransport(
            tls=lambda: context, max_connections=max_connections, proxies=proxies
        )
    return RegistryTransport(
        tls=functools.partial(_tls_context, verify, None),
        max_connections=max_connections,
        proxies=proxies,
    )


def new_http_client(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    """An httpx client over `transport`, for the token endpoints of the auth flow (registry
    requests themselves go straight to the transport: see RegistryClient._send)."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=HTTP_TIMEOUT,
        # A token endpoint behind a redirect is followed; httpx strips the Authorization
        # header on a cross-origin hop.
        follow_redirects=True,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


class RegistryClient:
    """One registry: `host[:port]` reached over an injected httpx.AsyncClient."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        host: str,
        *,
        transport: httpx.AsyncBaseTransport,
        scheme: str | None = None,
        credentials: CredentialProvider | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        foreign_layers: bool = False,
        observer: RequestObserver | None = None,
        ecr: EcrApi | None = None,
        token_realms: Collection[str] = (),
    ) -> None:
        self.http = http
        self._observer = observer
        self._transport = transport
        self.host = host
        # Docker talks plain HTTP to loopback registries and HTTPS to everything else; so do we.
        self.scheme = scheme or ("http" if is_loopback_host(host) else "https")
        # Docker Hub: `docker.io` names the registry, `registry-1.docker.io` serves it.
        self.base_url = f"{self.scheme}://{registry_endpoint(host)}"
        origin = origin_of(self.base_url)
        if origin is None:
            raise InvalidReferenceError(f"{host!r} is not a registry host")
        # Our credentials go to this origin only (domain/realms.py).
        self.origin: Origin = origin
        self._own_prefix = self.base_url + "/"
        self._auth = Authenticator(
            http, credentials, registry=self.origin, token_realms=token_realms
        )
        self._slots = asyncio.Semaphore(max_in_flight)
        self._small = asyncio.Semaphore(max_in_flight * SMALL_REQUESTS_PER_SLOT)
        self.referrers_api: bool | None = None  # learned on first use
        # As a destination: copy non-distributable (foreign) layers too, not only the manifest.
        self.foreign_layers = foreign_layers
        # An ECR registry: repositories are listed and created through ECR's own API.
        self.ecr = ecr

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url})"

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of this registry's transfer slots (re-entrant within a task: the requests
        of a transfer run in its slot); a registry error raised while it is held names this
        registry's host."""
        held = _HELD.get()
        with self._attributed():
            if self.host in held:
                yield
                return
            async with self._slots:
                token = _HELD.set(held | {self.host})
                try:
                    yield
                finally:
                    _HELD.reset(token)

    @asynccontextmanager
    async def _request_slot(self, *, bulk: bool) -> AsyncIterator[None]:
        """A transfer slot for a `bulk` request (a blob's body), else a small-request slot; none
        when the task holds a transfer slot here already (a request of that transfer)."""
        if bulk or self.host in _HELD.get():
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

    async def _send(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None,
        content: Content,
        params: Mapping[str, str] | None,
        stream: bool,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> httpx.Response:
        replayable = not isinstance(content, AsyncIterator)
        # An absolute URL the registry gave us (an upload Location, a Link) may be elsewhere:
        # it gets no credentials, and never takes us from https down to http.
        own = self._own(url, method)
        sent_auth = await self._auth.authorization(scope) if own else None
        for attempt in (1, 2):
            all_headers = dict(headers or {})
            if sent_auth:
                all_headers["Authorization"] = sent_auth
            request = _request(method, url, all_headers, content=content, params=params)
            try:
                response = await self._exchange(request, all_headers)
            # A TLS alert read after the handshake (a refused client certificate, under TLS 1.3)
            # comes as ReadError caused by ssl.SSLError; a raw ssl.SSLError is caught too.
            except (httpx.HTTPError, ssl.SSLError) as exc:
                where = describe(method, request.url)
                raise _tls_error(where, exc) or TransportError(
                    f"{where}: {type(exc).__name__}: {exc}"
                ) from exc
            if (
                response.status_code == 401
                and attempt == 1
                and replayable
                # Only the registry's own challenge is answered: a 401 from where a redirect
                # or a Location led us would send our credentials to its realm.
                and _origin(response.request.url) == self.origin
            ):
                await response.aclose()
                # One forced refresh: the token expired or this scope had none yet.
                sent_auth = await self._auth.answer(response, scope)
                continue
            if not stream:
                try:
                    return await _read_capped(response, max_bytes)
                except (httpx.HTTPError, ssl.SSLError) as exc:
                    raise TransportError(
                        f"{describe(method, request.url)}: {type(exc).__name__}"
                    ) from exc
            return response
        raise AssertionError("unreachable: the loop returns or raises")

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

    async def _exchange(self, request: httpx.Request, headers: dict[str, str]) -> httpx.Response:
        """Send on the transport, following the redirects of GET and HEAD.

        httpx.AsyncClient is bypassed here: its per-request work (URL merging, a cookie jar
        copied and parsed on every request and response) cost as much CPU as the exchange.
        Registries set no cookies we need; containers/image (skopeo) keeps none either."""
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._observed(request)
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
            source_origin, target_origin = _origin(request.url), _origin(target)
            if source_origin is None or target_origin is None:
                raise httpx.UnsupportedProtocol(
                    f"redirect to {str(target)[:120]!r}", request=request
                )
            if is_downgrade(source_origin, target_origin):
                raise RegistryError(
                    f"{describe(request.method, request.url)}: refusing a redirect from https "
                    f"to {target.scheme}://{target.host}",
                    status=response.status_code,
                    temporary=False,
                )
            if target_origin != source_origin:
                # Our credentials are for the registry, never for its storage backend.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            request = _request(request.method, target, headers)
        raise httpx.TooManyRedirects(f"over {MAX_REDIRECTS} redirects", request=request)

    async def _check(self, response: httpx.Response, expected: tuple[int, ...]) -> None:
        """raise_for_status, naming why we had no credentials when that is why we were refused
        (a credential helper that failed, where anonymous access was not enough)."""
        try:
            await raise_for_status(response, expected)
        except AuthError as exc:
            problem = self._auth.problem
            if problem is None:
                raise
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
    ) -> httpx.Response:
        """Send one request, body read (at most `max_bytes` of a success, MAX_ERROR_BODY of a
        failure), and raise the typed error unless `expected`."""
        url = self.url(path)
        async with self._request_slot(bulk=False):
            response = await self._send(
                method,
                url,
                scope=scope,
                headers=headers,
                content=content,
                params=params,
                stream=False,
                max_bytes=max_bytes,
            )
            await self._check(response, expected)
            return response

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
        transfer slot, unless the caller says the body is small (`bulk=False`, a manifest)."""
        url = self.url(path)
        async with self._request_slot(bulk=bulk):
            response = await self._send(
                method,
                url,
                scope=scope,
                headers=headers,
                content=None,
                params=None,
                stream=True,
            )
            try:
                await self._check(response, expected)
                yield response
            except (httpx.HTTPError, ssl.SSLError) as exc:
                # The caller reading the body (a manifest, a blob) lost the connection.
                where = describe(method, response.request.url)
                raise TransportError(f"{where}: {type(exc).__name__}: {exc}") from exc
            finally:
                await response.aclose()


async def _read_capped(response: httpx.Response, max_bytes: int) -> httpx.Response:
    """The response with its body read: at most `max_bytes` of a success (more is refused, not
    temporary: a registry answering this much is misbehaving, not slow), the first
    MAX_ERROR_BODY bytes of a failure (enough to build its error, the rest is dropped).

    The raw bytes are read (we ask for no content coding, and decoding one a server sends
    anyway could inflate past the cap) and kept as the response's content, as aread() keeps
    them: building a new httpx.Response cost ~20 us per request."""
    failed = response.status_code >= 400
    limit = MAX_ERROR_BODY if failed else max_bytes
    declared = response.headers.get("content-length", "")
    chunks: list[bytes] = []
    seen = 0
    # A HEAD answer's Content-Length is the size of what a GET would send: there is no body.
    head = response.request.method == "HEAD"
    over = not head and declared.isdigit() and int(declared) > limit
    if not over:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            seen += len(chunk)
            if seen > limit:
                over = True
                break
    await response.aclose()
    if over and not failed:
        raise RegistryError(
            f"{describe(response.request.method, response.request.url)}: the answer is larger "
            f"than {limit} bytes",
            status=response.status_code,
            temporary=False,
        )
    content = b"".join(chunks)  # one chunk (the usual case) is not copied
    response._content = content[:limit] if seen > limit else content
    return response


def _tls_error(where: str, exc: BaseException) -> TlsError | None:
    """A TlsError when `exc` was caused by an untrusted server certificate or by the server
    refusing our client certificate; retrying either cannot help, so neither is temporary."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return TlsError(
                f"{where}: the registry's TLS certificate is not trusted ({cause.verify_message});"
                " give its CA bundle (ca_file, or --src-ca-file / --dst-ca-file)"
            )
        # Alerts such as CERTIFICATE_REQUIRED / BAD_CERTIFICATE: the server wants a client
        # certificate from a CA it trusts and did not get one.
        if isinstance(cause, ssl.SSLError) and "CERTIFICATE" in str(cause.reason or ""):
            return TlsError(
                f"{where}: the registry refused the TLS handshake ({cause.reason}); it requires "
                "a client certificate it trusts (client_cert and client_key)"
            )
        cause = cause.__cause__ or cause.__context__
    return None


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
