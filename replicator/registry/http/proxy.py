"""HTTP proxies: which one (if any) a registry origin is reached through, and the CONNECT tunnel.

The choice follows Go's `httpproxy` (what docker, containerd and skopeo use), so one environment
means the same to all of them: `HTTPS_PROXY` for https origins, `HTTP_PROXY` for http ones (the
lower-case names too, upper case first), `NO_PROXY` a comma-separated list of host names (a name
matches itself and its subdomains; a leading dot matches subdomains only), IP addresses and CIDR
ranges, each with an optional `:port`, or `*` for every host. Loopback is never proxied through
the environment: a proxy elsewhere cannot reach this host's loopback registries. A proxy set on
a registry in the config (`proxy = "http://..."`) is used for it whatever the environment says,
loopback included; `proxy = "none"` reaches it directly.

https origins go through a `CONNECT host:port` tunnel and TLS inside it; http origins are sent
to the proxy in absolute form (`GET http://host:port/v2/ HTTP/1.1`).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from replicator.registry.http import http11

# A proxy URL without a port: Go's httpproxy assumes 80 for http:// proxies, and so do we.
DEFAULT_PROXY_PORT = 80
# The value of `proxy` in a registry's config that means "never through a proxy".
DIRECT = "none"


class ProxyUrlError(ValueError):
    """A proxy URL that cannot be used (not http://, no host, a bad port)."""


@dataclass(frozen=True, slots=True)
class ProxyEndpoint:
    """One proxy server; its credentials (from the URL's userinfo) never appear in repr()."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The headers every request to this proxy carries (`Proxy-Authorization`, if any)."""
        if self.authorization is None:
            return ()
        return ((b"Proxy-Authorization", self.authorization.encode()),)


def parse_proxy_url(value: str) -> ProxyEndpoint:
    """A proxy from `http://[user:pass@]host[:port]` (a bare `host:port` is taken as http)."""
    text = value.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http":
        # TLS to the proxy itself (https://) and SOCKS are not implemented: say so rather than
        # send plain HTTP to a port that expects something else.
        raise ProxyUrlError(f"proxy URL scheme {parts.scheme!r} is not supported; use http://")
    if not parts.hostname:
        raise ProxyUrlError("proxy URL names no host")
    try:
        port = parts.port or DEFAULT_PROXY_PORT
    except ValueError as exc:
        raise ProxyUrlError("proxy URL has an invalid port") from exc
    authorization = None
    if parts.username is not None:
        raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(raw).decode()
    return ProxyEndpoint(parts.hostname, port, authorization)


@dataclass(frozen=True, slots=True)
class _NoProxyEntry:
    """One `NO_PROXY` item: a domain, an IP network, or `*`; optionally one port."""

    domain: str | None = None
    subdomains_only: bool = False
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        if self.domain is None:
            return True  # `*`
        if host == self.domain:
            return not self.subdomains_only
        return host.endswith("." + self.domain)


def _no_proxy_entry(item: str) -> _NoProxyEntry | None:
    text = item.strip().lower()
    if not text:
        return None
    if text == "*":
        return _NoProxyEntry()
    port: int | None = None
    host = text
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    elif text.count(":") == 1:
        name, _, digits = text.partition(":")
        if digits.isdigit():
            host, port = name, int(digits)
    try:
        return _NoProxyEntry(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    # Go's rule: `foo.com` matches it and its subdomains; `.foo.com` and `*.foo.com` only the
    # subdomains.
    subdomains_only = host.startswith((".", "*."))
    return _NoProxyEntry(
        domain=host.removeprefix("*").removeprefix("."),
        subdomains_only=subdomains_only,
        port=port,
    )


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Where each origin's connections go: a proxy per scheme and the exceptions."""

    http: ProxyEndpoint | None = None
    https: ProxyEndpoint | None = None
    no_proxy: tuple[_NoProxyEntry, ...] = ()
    # A proxy named for one registry in the config: it applies to loopback as well.
    explicit: bool = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ProxySettings:
        """The settings of `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (or lower case)."""

        def var(name: str) -> str:
            return environ.get(name.upper()) or environ.get(name.lower()) or ""

        http, https = var("http_proxy"), var("https_proxy")
        entries = (_no_proxy_entry(item) for item in var("no_proxy").split(","))
        return cls(
            http=parse_proxy_url(http) if http else None,
            https=parse_proxy_url(https) if https else None,
            no_proxy=tuple(entry for entry in entries if entry is not None),
        )

    @classmethod
    def configured(cls, value: str) -> ProxySettings:
        """A registry's own `proxy` setting: a URL used for both schemes, or `none`."""
        if value.strip().lower() == DIRECT:
            return cls(explicit=True)
        endpoint = parse_proxy_url(value)
        return cls(http=endpoint, https=endpoint, explicit=True)

    def route(self, scheme: str, host: str, port: int) -> ProxyEndpoint | None:
        """The proxy for an origin, or None to connect directly."""
        proxy = self.https if scheme == "https" else self.http
        if proxy is None:
            return None
        name = host.strip("[]").lower().rstrip(".")
        if not self.explicit:
            if name == "localhost" or _is_loopback_address(name):
                return None
            if any(entry.matches(name, port) for entry in self.no_proxy):
                return None
        return proxy


def _is_loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TunnelRefused(Exception):
    """The proxy answered the CONNECT with something other than 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def open_tunnel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    proxy: ProxyEndpoint,
    authority: str,
) -> None:
    """Ask the proxy for a tunnel to `authority` (host:port); raises TunnelRefused unless 2xx.

    The proxy's answer is read up to its blank line only: a 2xx to CONNECT has no body, and
    after it the bytes on the connection are the origin's (its TLS handshake)."""
    head = http11.encode_request_head(
        b"CONNECT",
        authority.encode("ascii"),
        [(b"Host", authority.encode("ascii")), *proxy.headers()],
    )
    writer.write(head)
    await writer.drain()
    data = await reader.readuntil(http11.HEAD_END)
    status = http11.parse_response_head(data).status
    if not 200 <= status < 300:
        raise TunnelRefused(status)
