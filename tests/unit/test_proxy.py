"""Proxy choice: HTTP(S)_PROXY, NO_PROXY as Go's httpproxy reads them, and proxy URLs."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from replicator.registry.connections import new_transport
from replicator.registry.http.proxy import ProxySettings, ProxyUrlError, parse_proxy_url

PROXY = "http://proxy.corp:3128"


class TestRoute:
    """Which origins go through the proxy."""

    @pytest.mark.parametrize(
        ("no_proxy", "host", "port", "proxied"),
        [
            ("", "registry.example.com", 443, True),
            ("*", "registry.example.com", 443, False),
            ("example.com", "example.com", 443, False),
            ("example.com", "registry.example.com", 443, False),
            (".example.com", "example.com", 443, True),
            (".example.com", "registry.example.com", 443, False),
            ("*.example.com", "registry.example.com", 443, False),
            ("*.example.com", "example.com", 443, True),
            ("example.com", "notexample.com", 443, True),
            ("Example.COM", "registry.example.com", 443, False),
            ("example.com:5000", "registry.example.com", 5000, False),
            ("example.com:5000", "registry.example.com", 443, True),
            ("10.0.0.0/8", "10.1.2.3", 443, False),
            ("10.0.0.0/8", "11.1.2.3", 443, True),
            ("10.1.2.3", "10.1.2.3", 443, False),
            ("[::1]:443, fd00::/8", "fd00::5", 443, False),
            (" a.com , ,b.com ", "x.b.com", 443, False),
            ("", "localhost", 5000, False),
            ("", "127.0.0.1", 5000, False),
            ("", "::1", 5000, False),
        ],
        ids=str,
    )
    def test_no_proxy(self, no_proxy: str, host: str, port: int, proxied: bool) -> None:
        """NO_PROXY entries (names and their subdomains, leading-dot subdomains only, ports,
        addresses, CIDR ranges, `*`) and loopback are connected to directly."""
        settings = ProxySettings.from_environment({"HTTPS_PROXY": PROXY, "NO_PROXY": no_proxy})
        assert (settings.route("https", host, port) is not None) is proxied

    def test_scheme_picks_the_variable(self) -> None:
        """https origins use HTTPS_PROXY, http ones HTTP_PROXY; no variable, no proxy."""
        settings = ProxySettings.from_environment({"HTTPS_PROXY": PROXY})
        assert str(settings.route("https", "r.example", 443)) == "proxy.corp:3128"
        assert settings.route("http", "r.example", 80) is None

    def test_upper_case_wins_and_lower_case_is_read(self) -> None:
        """HTTP_PROXY wins over http_proxy; http_proxy alone is read."""
        both = ProxySettings.from_environment(
            {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:2"}
        )
        lower = ProxySettings.from_environment({"http_proxy": "http://lower:2"})
        assert str(both.route("http", "r.example", 80)) == "upper:1"
        assert str(lower.route("http", "r.example", 80)) == "lower:2"

    def test_configured_proxy_applies_to_loopback_and_ignores_no_proxy(self) -> None:
        """A registry's own proxy setting is used even for loopback; "none" means direct."""
        assert ProxySettings.configured(PROXY).route("http", "127.0.0.1", 5000) is not None
        assert ProxySettings.configured("none").route("https", "r.example", 443) is None


class TestProxyUrl:
    """Proxy URLs are parsed, their credentials kept out of repr."""

    def test_credentials_become_proxy_authorization(self) -> None:
        """userinfo (percent-decoded) becomes a Basic Proxy-Authorization, never in repr."""
        endpoint = parse_proxy_url("http://user:p%40ss@proxy:8080")
        assert endpoint.headers() == ((b"Proxy-Authorization", b"Basic dXNlcjpwQHNz"),)
        assert "p@ss" not in repr(endpoint)
        assert "dXNl" not in repr(endpoint)

    def test_bare_host_port_and_default_port(self) -> None:
        """`host:port` is taken as http://; without a port, 80 (as Go does)."""
        assert (parse_proxy_url("proxy:3128").host, parse_proxy_url("proxy:3128").port) == (
            "proxy",
            3128,
        )
        assert parse_proxy_url("http://proxy").port == 80

    @pytest.mark.parametrize(
        "value", ["https://proxy:443", "socks5://proxy:1080", "http://", "http://proxy:99999"]
    )
    def test_unusable_urls_are_refused(self, value: str) -> None:
        """TLS-to-proxy, SOCKS, no host and bad ports are refused with a reason."""
        with pytest.raises(ProxyUrlError):
            parse_proxy_url(value)


class TestTunnelRefused:
    """A proxy that will not open the tunnel fails the connection with a clear message."""

    @pytest.mark.parametrize(
        ("answer", "text"),
        [
            (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "407: it wants credentials"),
            (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "(403)"),
            (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "something that is not HTTP"),
        ],
        ids=["407", "403", "not-http"],
    )
    async def test_refused_connect(self, answer: bytes, text: str) -> None:
        """A 407, a 403 or a non-HTTP answer to CONNECT is a ConnectError naming the proxy."""
        seen: list[bytes] = []

        async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = ProxySettings.configured(f"http://u:secret@127.0.0.1:{port}")
        transport = new_transport(proxies=settings, max_connections=1)
        try:
            async with httpx.AsyncClient(transport=transport) as http:
                with pytest.raises(httpx.ConnectError) as caught:
                    await http.get("https://registry.example:5000/v2/")
        finally:
            server.close()
            await server.wait_closed()
        assert text in str(caught.value)
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert "secret" not in str(caught.value)
        assert seen[0].startswith(b"CONNECT registry.example:5000 HTTP/1.1\r\n")
        assert b"Proxy-Authorization: Basic dTpzZWNyZXQ=" in seen[0]
