"""How a registry is reached: its connection pool and TLS context, the httpx client of the token
endpoints, and what a TLS failure means (a TlsError, not worth retrying).

    transport = new_transport(verify="/etc/ssl/registry-ca.pem")
    http = new_http_client(transport, Timeouts().as_extension())
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Mapping

import httpx

from replicator.errors import TlsError
from replicator.registry.http.proxy import ProxySettings
from replicator.registry.http.transport import RegistryTransport

USER_AGENT = "replicator"
# The SSL error reasons of a plain-HTTP answer to a TLS handshake.
_PLAIN_HTTP_REASONS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"})


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


def new_http_client(
    transport: httpx.AsyncBaseTransport, timeouts: Mapping[str, float | None]
) -> httpx.AsyncClient:
    """An httpx client over `transport` with the registry's `timeouts`, for the token
    endpoints of the auth flow (registry requests themselves go straight to the transport:
    see RegistryClient._send)."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(**timeouts),
        # A token endpoint behind a redirect is followed; httpx strips the Authorization
        # header on a cross-origin hop.
        follow_redirects=True,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


def tls_error(where: str, exc: BaseException) -> TlsError | None:
    """A TlsError when `exc` was caused by an untrusted server certificate or by the server
    refusing our client certificate; retrying either cannot help, so neither is temporary."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return TlsError(
                f"{where}: the registry's TLS certificate is not trusted ({cause.verify_message});"
                " give its CA bundle (ca_file of registries.<name>, or copy's --src-ca-file / "
                "--dest-ca-file)"
            )
        # A server answering a TLS ClientHello in plain HTTP: OpenSSL reads "HTTP/1.1 400" as
        # a record of an unknown version.
        if isinstance(cause, ssl.SSLError) and cause.reason in _PLAIN_HTTP_REASONS:
            return TlsError(
                f"{where}: the registry answered in plain HTTP, not TLS: for a plain-HTTP "
                'registry give url = "http://..." in registries.<name>, or copy\'s '
                "--src-tls-verify=false / --dest-tls-verify=false (plain HTTP when it has no TLS)"
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


def unreachable_hint(exc: BaseException) -> str:
    """What to check when a connection could not be made (nothing listening, a name that does
    not resolve), else ""; said after the error, which stays temporary (a registry restarting
    is refused too)."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError) or "Connect call failed" in str(cause):
            return "; nothing listens there: is the registry running, and are host and port right?"
        if isinstance(cause, socket.gaierror) or "Name or service not known" in str(cause):
            return "; the host name does not resolve: check its spelling (and DNS)"
        cause = cause.__cause__ or cause.__context__
    return ""
