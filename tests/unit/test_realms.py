"""Where credentials may go (domain/auth/realms.py): token realms and origins, from values."""

from __future__ import annotations

import pytest

from replicator.domain.auth.realms import (
    Origin,
    anonymous_realm_problem,
    is_downgrade,
    origin_of,
    realm_problem,
)

HTTPS_REGISTRY: Origin = ("https", "registry.example.com", 443)
LOOPBACK_HTTP: Origin = ("http", "127.0.0.1", 5000)
HUB: Origin = ("https", "registry-1.docker.io", 443)

REALMS = [
    ("own-host-https", "https://registry.example.com/token", HTTPS_REGISTRY, (), None),
    ("own-host-other-port", "https://registry.example.com:5001/token", HTTPS_REGISTRY, (), None),
    ("own-host-plain-http", "http://registry.example.com/token", HTTPS_REGISTRY, (), "plain http"),
    ("other-host", "https://auth.example.com/token", HTTPS_REGISTRY, (), "token_realms"),
    ("other-host-named", "https://auth.example.com/token", HTTPS_REGISTRY,
     ("https://auth.example.com/",), None),
    ("named-by-origin-not-path", "https://auth.example.com/other", HTTPS_REGISTRY,
     ("https://auth.example.com/token",), None),
    ("named-with-other-scheme", "http://auth.example.com/token", HTTPS_REGISTRY,
     ("https://auth.example.com/token",), "token_realms"),
    ("loopback-http-registry-http-realm", "http://127.0.0.1:5001/token", LOOPBACK_HTTP, (), None),
    ("loopback-http-registry-other-host", "http://127.0.0.2:5001/token", LOOPBACK_HTTP, (),
     "token_realms"),
    ("docker-hub", "https://auth.docker.io/token", HUB, (), None),
    ("docker-hub-plain", "http://auth.docker.io/token", HUB, (), "token_realms"),
    ("not-a-url", "registry.example.com/token", HTTPS_REGISTRY, (), "not an http"),
    ("other-scheme", "ftp://registry.example.com/token", HTTPS_REGISTRY, (), "not an http"),
    ("bad-port", "https://registry.example.com:99999/token", HTTPS_REGISTRY, (), "not an http"),
    ("userinfo-host-trick", "https://registry.example.com@evil.example/token", HTTPS_REGISTRY,
     (), "token_realms"),
    ("case-insensitive-host", "https://REGISTRY.example.com/token", HTTPS_REGISTRY, (), None),
]  # fmt: skip


class TestRealmProblem:
    @pytest.mark.parametrize(
        ("realm", "registry", "named", "problem"),
        [case[1:] for case in REALMS],
        ids=[case[0] for case in REALMS],
    )
    def test_realm(
        self, realm: str, registry: Origin, named: tuple[str, ...], problem: str | None
    ) -> None:
        """A realm is trusted on the registry's host over https (http only for a loopback
        http registry), or when named; otherwise the problem says what to do."""
        found = realm_problem(realm, registry, named)
        if problem is None:
            assert found is None
        else:
            assert found is not None
            assert problem in found


ANONYMOUS = [
    ("other-host-https", "https://gitlab.example.com/jwt/auth", HTTPS_REGISTRY, None),
    ("other-host-plain-http", "http://auth.example.com/token", HTTPS_REGISTRY, "plain http"),
    ("loopback-registry-loopback-realm", "http://localhost:5001/token", LOOPBACK_HTTP, None),
    ("loopback-registry-remote-http-realm", "http://auth.example.com/token", LOOPBACK_HTTP,
     "plain http"),
    ("https-registry-loopback-http-realm", "http://127.0.0.1:5001/token", HTTPS_REGISTRY,
     "plain http"),
    ("not-a-url", "auth.example.com/token", HTTPS_REGISTRY, "not an http"),
]  # fmt: skip


class TestAnonymousRealmProblem:
    @pytest.mark.parametrize(
        ("realm", "registry", "problem"),
        [case[1:] for case in ANONYMOUS],
        ids=[case[0] for case in ANONYMOUS],
    )
    def test_anonymous_realm(self, realm: str, registry: Origin, problem: str | None) -> None:
        """Any https realm may be asked for an anonymous token (it learns nothing); plain http
        only on loopback for a loopback plain-http registry."""
        found = anonymous_realm_problem(realm, registry)
        if problem is None:
            assert found is None
        else:
            assert found is not None
            assert problem in found


class TestOrigins:
    @pytest.mark.parametrize(
        ("url", "origin"),
        [
            ("https://a.example/x?y", ("https", "a.example", 443)),
            ("http://A.example:8080", ("http", "a.example", 8080)),
            ("https://[::1]:5000/v2/", ("https", "::1", 5000)),
            ("/v2/x", None),
            ("file:///etc/passwd", None),
        ],
    )
    def test_origin_of(self, url: str, origin: Origin | None) -> None:
        """Scheme, lower-case host and port (the scheme's default when absent), or None."""
        assert origin_of(url) == origin

    def test_downgrade(self) -> None:
        """Only https to http is a downgrade."""
        assert is_downgrade(("https", "a", 443), ("http", "a", 80))
        assert not is_downgrade(("http", "a", 80), ("https", "a", 443))
        assert not is_downgrade(("https", "a", 443), ("https", "b", 443))
