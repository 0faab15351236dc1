"""Image references, repository names, tags and digests, validated against the OCI grammar."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from replicator.errors import InvalidReferenceError

# OCI distribution spec, "Pulling manifests": <name> components and the tag grammar.
# `\Z`, not `$`: `$` also matches before a trailing newline, which would let "repo\n" through.
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*\Z")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
# Digest algorithms we can verify while streaming; others are refused rather than trusted.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}
DIGEST_RE = re.compile(r"^(sha256|sha512):([a-f0-9]+)\Z")
# Docker's reference grammar for the registry host: DNS labels joined by '.', or a bracketed
# IPv6 address, then an optional port. The host goes into URLs, so nothing else may pass.
_HOST_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
HOST_RE = re.compile(
    rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[A-Fa-f0-9:.]+\])(?::[0-9]{{1,5}})?\Z"
)
# Docker Hub's names: `docker.io` is what references say, `index.docker.io` the v1 index, and
# `registry-1.docker.io` the host that serves the v2 API (docker maps the first two to it).
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
# Docker Hub's official images live under `library/`: `docker.io/alpine` is `library/alpine`.
DOCKER_HUB_OFFICIAL_NAMESPACE = "library"
# Registries such as distribution cap the whole name at 255 characters (host excluded).
MAX_NAME_LENGTH = 255


def validate_repository(name: str) -> str:
    """Return `name` if it is a valid OCI repository name, else raise InvalidReferenceError."""
    if not name:
        raise InvalidReferenceError("repository name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidReferenceError(
            f"repository name is {len(name)} characters, more than {MAX_NAME_LENGTH}"
        )
    if not NAME_RE.match(name):
        raise InvalidReferenceError(
            f"repository name {name[:80]!r} is not valid: lowercase letters, digits and "
            "separators ('.', '_', '__', '-') in components joined by '/'"
        )
    return name


def validate_tag(tag: str) -> str:
    """Return `tag` if it matches the OCI tag grammar (at most 128 characters)."""
    if not TAG_RE.match(tag):
        raise InvalidReferenceError(
            f"tag {tag[:80]!r} is not valid: [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
        )
    return tag


def validate_digest(digest: str) -> str:
    """Return `digest` if it is a well-formed sha256/sha512 digest."""
    match = DIGEST_RE.match(digest)
    if not match or len(match.group(2)) != _DIGEST_HEX_LENGTH[match.group(1)]:
        raise InvalidReferenceError(
            f"digest {digest[:80]!r} is not valid: expected sha256:<64 hex> or sha512:<128 hex>"
        )
    return digest


def is_digest(value: str) -> bool:
    """Whether `value` is a well-formed digest (used to tell tags from digests)."""
    try:
        validate_digest(value)
    except InvalidReferenceError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Reference:
    """`host[:port]/repository[:tag][@digest]`; host is empty for a registry-relative reference."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def identifier(self) -> str:
        """What goes after /manifests/: the digest when known, else the tag."""
        if self.digest:
            return self.digest
        if self.tag:
            return self.tag
        raise InvalidReferenceError(f"{self} names neither a tag nor a digest")

    def with_repository(self, repository: str) -> Reference:
        """The same image in another repository."""
        return Reference(self.host, repository, self.tag, self.digest)

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}" if self.host else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _looks_like_host(part: str) -> bool:
    # Docker's rule: the first component is a registry host if it has '.' or ':' or is localhost.
    return "." in part or ":" in part or part == "localhost"


def validate_host(host: str) -> str:
    """Return `host[:port]` if it is a DNS name or IP address with an optional port."""
    if not HOST_RE.match(host):
        raise InvalidReferenceError(
            f"registry host {host[:80]!r} is not valid: a DNS name or IP address, then [:port]"
        )
    return host


def parse_host_path(text: str) -> tuple[str, str]:
    """Split `host[:port][/path]` into host and path (path may be empty: the whole registry)."""
    text = text.strip()
    if "://" in text:
        raise InvalidReferenceError(f"{text!r}: give host[:port]/repository without a URL scheme")
    host, _, path = text.partition("/")
    if not host or not _looks_like_host(host):
        raise InvalidReferenceError(
            f"{text!r} does not start with a registry host (host[:port], or localhost)"
        )
    validate_host(host)
    path = path.strip("/")
    if path:
        validate_repository(path)
    return host, path


def parse_reference(text: str, *, require_host: bool = True) -> Reference:
    """Parse `host[:port]/repo[:tag][@digest]`; the tag and digest are optional."""
    rest = text.strip()
    digest: str | None = None
    if "@" in rest:
        rest, digest = rest.rsplit("@", 1)
        validate_digest(digest)
    tag: str | None = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        validate_tag(tag)
    first, _, remainder = rest.partition("/")
    if remainder and _looks_like_host(first):
        host, repository = first, remainder
    elif require_host:
        raise InvalidReferenceError(
            f"{text!r} does not start with a registry host (host[:port]/repo)"
        )
    else:
        host, repository = "", rest
    if host:
        validate_host(host)
    validate_repository(repository)
    if host.lower() in DOCKER_HUB_HOSTS and "/" not in repository:
        repository = f"{DOCKER_HUB_OFFICIAL_NAMESPACE}/{repository}"
    return Reference(host=host, repository=repository, tag=tag, digest=digest)


def registry_endpoint(host: str) -> str:
    """The `host[:port]` that serves the registry API for `host`: Docker Hub's names all go to
    `registry-1.docker.io`, as docker sends them; every other host is itself."""
    return DOCKER_HUB_ENDPOINT if host.lower() in DOCKER_HUB_HOSTS else host


def is_loopback_host(host: str) -> bool:
    """Whether `host[:port]` is loopback, which Docker (and we) talk to over plain HTTP."""
    if host.startswith("["):
        name = host[1:].split("]", maxsplit=1)[0]
    elif host.count(":") == 1:
        name = host.rsplit(":", 1)[0]
    else:
        name = host  # no port, or an unbracketed IPv6 address
    if name.lower() == "localhost":
        return True
    # A real address check: a name like "127.example.com" is not loopback and gets HTTPS.
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def validate_image_query(repository: str, digest: str | None, tag: str | None) -> None:
    """Check the repository, digest and tag a status query names (`replicator status`, the
    API's /v1/replication-status); raise InvalidReferenceError on the first bad one."""
    validate_repository(repository)
    if digest is not None:
        validate_digest(digest)
    if tag is not None:
        validate_tag(tag)


# skopeo's transports other than `docker://`: names of images that are not in a registry.
OTHER_TRANSPORTS = frozenset(
    {"containers-storage", "dir", "docker-archive", "docker-daemon", "oci", "oci-archive", "sif",
     "tarball"}
)  # fmt: skip
DOCKER_TRANSPORT = "docker://"


def without_transport(text: str) -> str:
    """`text` without skopeo's `docker://` prefix; InvalidReferenceError for another transport
    (`oci:`, `docker-archive:`...), which names no registry."""
    if text.startswith(DOCKER_TRANSPORT):
        return text[len(DOCKER_TRANSPORT) :]
    transport, colon, _ = text.partition(":")
    if colon and transport in OTHER_TRANSPORTS:
        raise InvalidReferenceError(
            f"{text[:120]!r} is skopeo's {transport}: transport; copy reads and writes "
            f"registries only: give host/repository[:tag], or {DOCKER_TRANSPORT}host/repository"
        )
    return text
