"""Image references, repository names, tags, digests and hosts (domain/images/refs.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.domain.images.refs import (
    MAX_NAME_LENGTH,
    Reference,
    is_digest,
    is_loopback_host,
    parse_host_path,
    parse_reference,
    registry_endpoint,
    validate_digest,
    validate_host,
    validate_repository,
    validate_tag,
    without_transport,
)
from replicator.errors import InvalidReferenceError

SHA256 = "sha256:" + "a" * 64
SHA512 = "sha512:" + "b" * 128

VALID_REFERENCES = [
    ("host:port/repo:tag", "127.0.0.1:5000/app:v1", Reference("127.0.0.1:5000", "app", "v1")),
    ("host/repo", "registry.example.com/app", Reference("registry.example.com", "app")),
    ("nested repo", "r.example.com/team/sub/app", Reference("r.example.com", "team/sub/app")),
    ("localhost", "localhost/app:latest", Reference("localhost", "app", "latest")),
    ("localhost:port", "localhost:5000/app", Reference("localhost:5000", "app")),
    ("digest", f"r.io/app@{SHA256}", Reference("r.io", "app", None, SHA256)),
    ("tag+digest", f"r.io:443/app:v2@{SHA256}", Reference("r.io:443", "app", "v2", SHA256)),
    ("sha512 digest", f"r.io/app@{SHA512}", Reference("r.io", "app", None, SHA512)),
    ("uppercase host", "Registry.Example.COM/app", Reference("Registry.Example.COM", "app")),
    ("ipv6 host", "[::1]:5000/app:v1", Reference("[::1]:5000", "app", "v1")),
    ("separators", "r.io/a.b_c__d---e/f:T_1.x-y", Reference("r.io", "a.b_c__d---e/f", "T_1.x-y")),
    ("surrounding spaces", "  r.io/app:v1\n", Reference("r.io", "app", "v1")),
    ("128-char tag", "r.io/app:" + "t" * 128, Reference("r.io", "app", "t" * 128)),
    ("255-char name", "r.io/" + "a" * 255, Reference("r.io", "a" * 255)),
]

INVALID_REFERENCES = [
    ("empty", ""),
    ("missing host", "team/app:v1"),
    ("bare name", "app"),
    ("host only", "r.example.com"),
    ("host and slash", "r.example.com/"),
    ("uppercase repo", "r.io/App"),
    ("dot-dot component", "r.io/team/../app"),
    ("dot-dot alone", "r.io/.."),
    ("percent-encoded dot", "r.io/%2e%2e/app"),
    ("empty path part", "r.io/team//app"),
    ("trailing slash", "r.io/team/"),
    ("leading separator", "r.io/-app"),
    ("trailing separator", "r.io/app-"),
    ("300-char name", "r.io/" + "a" * 300),
    ("256-char name", "r.io/" + "a" * 256),
    ("200-char tag", "r.io/app:" + "t" * 200),
    ("129-char tag", "r.io/app:" + "t" * 129),
    ("tag starting with dot", "r.io/app:.v1"),
    ("tag starting with dash", "r.io/app:-v1"),
    ("empty tag", "r.io/app:"),
    ("empty digest", "r.io/app@"),
    ("short digest", "r.io/app@sha256:" + "a" * 63),
    ("long digest", "r.io/app@sha256:" + "a" * 65),
    ("sha512 with sha256 length", "r.io/app@sha512:" + "a" * 64),
    ("unknown algorithm", "r.io/app@md5:" + "a" * 32),
    ("uppercase hex", "r.io/app@sha256:" + "A" * 64),
    ("digest with newline", f"r.io/app@{SHA256}\nx"),
    ("url scheme", "https://r.io/app"),
    ("space in host", "r .io/app"),
    ("query in host", "r.io?x=1/app"),
    ("fragment in host", "r.io#/app"),
    ("non-numeric port", "r.io:abc/app"),
    ("label ending in dash", "r-.io/app"),
    ("two at signs", f"r.io/a@b@{SHA256}"),
]


class TestParseReference:
    """parse_reference(): `host[:port]/repo[:tag][@digest]`."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [(text, ref) for _, text, ref in VALID_REFERENCES],
        ids=[case[0] for case in VALID_REFERENCES],
    )
    def test_valid(self, text: str, expected: Reference) -> None:
        """A valid reference parses into its host, repository, tag and digest."""
        assert parse_reference(text) == expected

    @pytest.mark.parametrize(
        "text", [text for _, text in INVALID_REFERENCES], ids=[c[0] for c in INVALID_REFERENCES]
    )
    def test_invalid(self, text: str) -> None:
        """An invalid reference raises InvalidReferenceError."""
        with pytest.raises(InvalidReferenceError):
            parse_reference(text)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("app", Reference("", "app")),
            ("team/app:v1", Reference("", "team/app", "v1")),
            (f"app@{SHA256}", Reference("", "app", None, SHA256)),
            ("r.io/app", Reference("r.io", "app")),
        ],
        ids=["bare", "path-tag", "digest", "with-host"],
    )
    def test_host_optional(self, text: str, expected: Reference) -> None:
        """With require_host=False a registry-relative reference has an empty host."""
        assert parse_reference(text, require_host=False) == expected

    @pytest.mark.parametrize(
        "text",
        ["r.io/app:v1", f"r.io:5000/team/app@{SHA256}", f"[::1]:5/a:b@{SHA256}", "localhost/x"],
        ids=["tag", "digest", "ipv6-both", "localhost"],
    )
    def test_str_round_trips(self, text: str) -> None:
        """str() of a parsed reference parses back to the same reference."""
        ref = parse_reference(text)
        assert str(ref) == text
        assert parse_reference(str(ref)) == ref

    def test_error_names_the_input(self) -> None:
        """The error message quotes the text that was refused."""
        with pytest.raises(InvalidReferenceError, match="team/app"):
            parse_reference("team/app")

    @settings(deadline=None)  # a loaded CI machine can exceed the default 200 ms
    @given(st.text(max_size=300))
    def test_arbitrary_text_parses_or_raises_invalid_reference(self, text: str) -> None:
        """Arbitrary text gives a Reference or InvalidReferenceError, never another exception."""
        try:
            ref = parse_reference(text)
        except InvalidReferenceError:
            return
        assert isinstance(ref, Reference)
        assert ref.host
        assert validate_repository(ref.repository) == ref.repository

    @settings(deadline=None)  # a loaded CI machine can exceed the default 200 ms
    @given(
        st.from_regex(r"\A[a-z0-9][a-z0-9./:@_-]{0,80}\Z"),
        st.booleans(),
    )
    def test_reference_like_text_parses_or_raises(self, text: str, require_host: bool) -> None:
        """Text made of reference characters gives a Reference or InvalidReferenceError."""
        try:
            ref = parse_reference(text, require_host=require_host)
        except InvalidReferenceError:
            return
        assert parse_reference(str(ref), require_host=require_host) == ref


class TestReference:
    """The Reference value."""

    @pytest.mark.parametrize(
        ("ref", "expected"),
        [
            (Reference("h.io", "a", "v1", SHA256), SHA256),
            (Reference("h.io", "a", "v1"), "v1"),
            (Reference("h.io", "a", None, SHA256), SHA256),
        ],
        ids=["digest-wins", "tag", "digest"],
    )
    def test_identifier(self, ref: Reference, expected: str) -> None:
        """The identifier is the digest when known, else the tag."""
        assert ref.identifier == expected

    def test_identifier_without_tag_or_digest(self) -> None:
        """A reference with neither tag nor digest has no identifier."""
        with pytest.raises(InvalidReferenceError, match="neither"):
            _ = Reference("h.io", "a").identifier

    def test_with_repository(self) -> None:
        """with_repository() keeps host, tag and digest and changes only the repository."""
        ref = Reference("h.io", "a", "v1", SHA256)
        assert ref.with_repository("b/c") == Reference("h.io", "b/c", "v1", SHA256)


class TestParseHostPath:
    """parse_host_path(): `host[:port][/prefix]` for recursive copies."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("127.0.0.1:5000", ("127.0.0.1:5000", "")),
            ("127.0.0.1:5000/", ("127.0.0.1:5000", "")),
            ("r.io/team", ("r.io", "team")),
            ("r.io/team/sub/", ("r.io", "team/sub")),
            ("localhost/team", ("localhost", "team")),
            ("localhost", ("localhost", "")),
            (" r.io:443/team ", ("r.io:443", "team")),
            ("[::1]:5000/t", ("[::1]:5000", "t")),
        ],
        ids=["host-port", "trailing-slash", "prefix", "nested", "localhost", "bare-localhost",
             "spaces", "ipv6"],
    )  # fmt: skip
    def test_valid(self, text: str, expected: tuple[str, str]) -> None:
        """Host and (possibly empty) path prefix are split apart."""
        assert parse_host_path(text) == expected

    @pytest.mark.parametrize(
        "text",
        ["", "team/app", "http://r.io/team", "r.io/Team", "r.io/a/../b", "r.io#/x", "r.io:x"],
        ids=["empty", "no-host", "scheme", "uppercase", "dot-dot", "fragment", "bad-port"],
    )
    def test_invalid(self, text: str) -> None:
        """Text without a valid host, or with an invalid prefix, is refused."""
        with pytest.raises(InvalidReferenceError):
            parse_host_path(text)


class TestValidateRepository:
    """validate_repository(): the OCI name grammar and length cap."""

    @pytest.mark.parametrize(
        "name",
        ["a", "a/b", "a.b", "a_b", "a__b", "a-b", "a---b", "0", "a" * MAX_NAME_LENGTH],
        ids=["one", "path", "dot", "underscore", "double-underscore", "dash", "dashes", "digit",
             "max-length"],
    )  # fmt: skip
    def test_valid(self, name: str) -> None:
        """A name of the grammar is returned unchanged."""
        assert validate_repository(name) == name

    @pytest.mark.parametrize(
        "name",
        ["", "A", "a//b", "/a", "a/", "a..b", "a___b", ".a", "a.", "..", "%2e", "a b", "a\n",
         "é", "a" * (MAX_NAME_LENGTH + 1)],
        ids=["empty", "uppercase", "empty-part", "leading-slash", "trailing-slash", "double-dot",
             "triple-underscore", "leading-dot", "trailing-dot", "dot-dot", "percent", "space",
             "trailing-newline", "non-ascii", "too-long"],
    )  # fmt: skip
    def test_invalid(self, name: str) -> None:
        """A name outside the grammar or over the cap raises InvalidReferenceError."""
        with pytest.raises(InvalidReferenceError):
            validate_repository(name)

    def test_too_long_message_gives_length(self) -> None:
        """An over-long name's error says how long it is and what the cap is."""
        with pytest.raises(InvalidReferenceError, match=f"300 characters.*{MAX_NAME_LENGTH}"):
            validate_repository("a" * 300)


class TestValidateTag:
    """validate_tag(): `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`."""

    @pytest.mark.parametrize(
        "tag",
        ["v1", "V1.2.3", "_x", "latest", "a" * 128, f"sha256-{'a' * 64}.sig"],
        ids=["simple", "uppercase-dots", "underscore-first", "latest", "max-length", "cosign"],
    )
    def test_valid(self, tag: str) -> None:
        """A tag of the grammar is returned unchanged."""
        assert validate_tag(tag) == tag

    @pytest.mark.parametrize(
        "tag",
        ["", ".v1", "-v1", "a" * 129, "a" * 200, "v1\n", "v 1", "v1:x", "v/1", "v@1"],
        ids=["empty", "dot-first", "dash-first", "129", "200", "newline", "space", "colon",
             "slash", "at"],
    )  # fmt: skip
    def test_invalid(self, tag: str) -> None:
        """A tag outside the grammar raises InvalidReferenceError."""
        with pytest.raises(InvalidReferenceError):
            validate_tag(tag)


class TestValidateDigest:
    """validate_digest() and is_digest(): sha256 and sha512 of the right length."""

    @pytest.mark.parametrize("digest", [SHA256, SHA512], ids=["sha256", "sha512"])
    def test_valid(self, digest: str) -> None:
        """A well-formed digest is returned unchanged and is_digest() agrees."""
        assert validate_digest(digest) == digest
        assert is_digest(digest)

    @pytest.mark.parametrize(
        "digest",
        ["", "sha256", "sha256:", "sha256:" + "a" * 63, "sha256:" + "a" * 65,
         "sha256:" + "a" * 128, "sha512:" + "a" * 64, "sha384:" + "a" * 96, "md5:" + "a" * 32,
         "SHA256:" + "a" * 64, "sha256:" + "A" * 64, "sha256:" + "g" * 64, SHA256 + "\n",
         " " + SHA256, "v1"],
        ids=["empty", "no-colon", "no-hex", "63", "65", "sha256-128", "sha512-64", "sha384",
             "md5", "uppercase-algorithm", "uppercase-hex", "non-hex", "trailing-newline",
             "leading-space", "tag"],
    )  # fmt: skip
    def test_invalid(self, digest: str) -> None:
        """A malformed digest raises InvalidReferenceError and is_digest() is False."""
        with pytest.raises(InvalidReferenceError):
            validate_digest(digest)
        assert not is_digest(digest)


class TestValidateHost:
    """validate_host(): DNS name or IP, optional port; nothing that changes a URL's meaning."""

    @pytest.mark.parametrize(
        "host",
        ["localhost", "r.io", "R.IO:443", "127.0.0.1:5000", "[::1]", "[::1]:5000", "a-b.c",
         "[fe80::1]:1"],
        ids=["localhost", "dns", "uppercase-port", "ipv4-port", "ipv6", "ipv6-port", "dash",
             "ipv6-link-local"],
    )  # fmt: skip
    def test_valid(self, host: str) -> None:
        """A valid host is returned unchanged."""
        assert validate_host(host) == host

    @pytest.mark.parametrize(
        "host",
        ["", "r.io:", "r.io:123456", "r..io", ".r.io", "-r.io", "r_x.io", "u@r.io", "r.io/x",
         "r.io?a", "r.io#a", "[::1", "r io", "r.io\n"],
        ids=["empty", "empty-port", "long-port", "empty-label", "leading-dot", "leading-dash",
             "underscore", "userinfo", "path", "query", "fragment", "open-bracket", "space",
             "newline"],
    )  # fmt: skip
    def test_invalid(self, host: str) -> None:
        """A host that is not a name or address with a port raises InvalidReferenceError."""
        with pytest.raises(InvalidReferenceError):
            validate_host(host)


class TestIsLoopbackHost:
    """is_loopback_host(): loopback registries get plain HTTP, everything else HTTPS."""

    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("localhost", True),
            ("localhost:5000", True),
            ("LOCALHOST:5000", True),
            ("127.0.0.1", True),
            ("127.0.0.1:5000", True),
            ("127.1.2.3:80", True),
            ("[::1]:5000", True),
            ("[::1]", True),
            ("::1", True),
            ("10.0.0.1:5000", False),
            ("r.example.com", False),
            ("127.example.com", False),
            ("127.0.0.1.nip.io:5000", False),
            ("localhost.example.com", False),
            ("[fe80::1]:5000", False),
            ("", False),
        ],
        ids=lambda v: repr(v) if isinstance(v, str) else str(v),
    )
    def test_loopback(self, host: str, expected: bool) -> None:
        """Only localhost, 127.0.0.0/8 and ::1 count as loopback, with or without a port."""
        assert is_loopback_host(host) is expected


DOCKER_HUB = [
    ("official", "docker.io/alpine:3", "docker.io", "library/alpine"),
    ("official-index", "index.docker.io/alpine", "index.docker.io", "library/alpine"),
    ("official-v2-host", "registry-1.docker.io/busybox", "registry-1.docker.io", "library/busybox"),
    ("user-image", "docker.io/bitnami/redis", "docker.io", "bitnami/redis"),
    ("explicit-library", "docker.io/library/alpine", "docker.io", "library/alpine"),
    ("other-registry-single", "quay.io/alpine", "quay.io", "alpine"),
    ("lookalike-host", "docker.io.evil.com/alpine", "docker.io.evil.com", "alpine"),
]


class TestDockerHub:
    """Docker Hub's names, as docker reads them."""

    @pytest.mark.parametrize(
        ("text", "host", "repository"),
        [case[1:] for case in DOCKER_HUB],
        ids=[case[0] for case in DOCKER_HUB],
    )
    def test_library_default(self, text: str, host: str, repository: str) -> None:
        """A one-component name on Docker Hub is under `library/`; elsewhere it is as given."""
        ref = parse_reference(text)
        assert (ref.host, ref.repository) == (host, repository)

    @pytest.mark.parametrize(
        ("host", "endpoint"),
        [("docker.io", "registry-1.docker.io"), ("index.docker.io", "registry-1.docker.io"),
         ("DOCKER.IO", "registry-1.docker.io"), ("registry-1.docker.io", "registry-1.docker.io"),
         ("quay.io", "quay.io"), ("127.0.0.1:5000", "127.0.0.1:5000")],
    )  # fmt: skip
    def test_registry_endpoint(self, host: str, endpoint: str) -> None:
        """Docker Hub's names are served by registry-1.docker.io; other hosts by themselves."""
        assert registry_endpoint(host) == endpoint


class TestWithoutTransport:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("docker://ghcr.io/org/app:v1", "ghcr.io/org/app:v1"),
            ("docker://localhost:5000/app", "localhost:5000/app"),
            ("ghcr.io/org/app:v1", "ghcr.io/org/app:v1"),
            ("localhost:5000/app", "localhost:5000/app"),
        ],
        ids=["docker-prefix", "docker-prefix-port", "bare", "bare-port"],
    )
    def test_registry_references(self, text: str, expected: str) -> None:
        """skopeo's docker:// is dropped; a bare reference is left as it is."""
        assert without_transport(text) == expected

    @pytest.mark.parametrize("text", ["oci:/tmp/layout:v1", "docker-archive:/tmp/a.tar",
                                      "containers-storage:app", "dir:/tmp/x"])  # fmt: skip
    def test_other_transports_are_refused_naming_docker(self, text: str) -> None:
        """Another skopeo transport names no registry: refused, saying what is accepted."""
        with pytest.raises(InvalidReferenceError, match="docker://"):
            without_transport(text)
