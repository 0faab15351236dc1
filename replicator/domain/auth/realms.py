"""Where a registry's credentials may go: its own origin, and the token realms it may name.

A registry's credentials (Basic, or a token it issued) are sent to the registry itself, never
to another origin it points us at (an upload `Location`, a `Link`, a redirect to storage), and
never from https down to plain http. A Bearer challenge sends the credentials to its realm, so
the realm must be trusted: https on the registry's own host, or named in the config
(`registries.<name>.token_realms`), or a registry's well-known token service (Docker Hub's).
Plain http is accepted only for a loopback registry that is itself plain http (a test or a
registry on the same machine), as Docker does for the registry.

A realm that may not have the credentials may still be asked for a token without any
(`anonymous_realm_problem`): a token asked anonymously discloses nothing, and public images
behind another host's token service need it (registry.gitlab.com sends clients to gitlab.com,
nvcr.io to authn.nvidia.com). Only over https, or plain http on loopback for a loopback registry
that is itself plain http.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from replicator.domain.images.refs import is_loopback_host

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Token services that live on another host than the registry they serve, by registry endpoint.
# Docker Hub: registry-1.docker.io answers with realm https://auth.docker.io/token.
WELL_KNOWN_REALMS: dict[str, frozenset[str]] = {
    "registry-1.docker.io": frozenset({"https://auth.docker.io"}),
}


def origin_of(url: str) -> Origin | None:
    """(scheme, lower-case host, port) of an absolute http(s) URL, or None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return (scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme])


def is_downgrade(source: Origin, target: Origin) -> bool:
    """Whether moving from `source` to `target` leaves https for plain http."""
    return source[0] == "https" and target[0] == "http"


def authority(origin: Origin) -> str:
    """`host[:port]` of an origin, the port left out when it is the scheme's default."""
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    return shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"


def realm_problem(realm: str, registry: Origin, named: Collection[str] = ()) -> str | None:
    """Why credentials must not be sent to token `realm` of a registry at `registry`, or None.

    `named` holds the realm URLs (or origins) the config trusts for this registry; a named realm
    is trusted with the scheme it is named with."""
    target = origin_of(realm)
    if target is None:
        return f"token realm {realm[:120]!r} is not an http(s) URL"
    trusted = {origin_of(url) for url in named} | {
        origin_of(url) for url in WELL_KNOWN_REALMS.get(authority(registry), ())
    }
    if target in trusted:
        return None
    if target[1] != registry[1]:
        return (
            f"token realm {authority(target)} is not on the registry's host {registry[1]}; "
            "name it in token_realms to send credentials there"
        )
    if target[0] == "https":
        return None
    loopback_http = registry[0] == "http" and is_loopback_host(authority(registry))
    if loopback_http:
        return None
    return (
        f"token realm {authority(target)} is plain http: credentials go to a realm over https "
        "only (plain http is accepted for a loopback registry that is itself plain http)"
    )


def anonymous_realm_problem(realm: str, registry: Origin) -> str | None:
    """Why token `realm` must not even be asked for an anonymous token, or None (https, or plain
    http on loopback for a loopback plain-http registry)."""
    target = origin_of(realm)
    if target is None:
        return f"token realm {realm[:120]!r} is not an http(s) URL"
    if target[0] == "https":
        return None
    loopback = registry[0] == "http" and is_loopback_host(authority(registry))
    if loopback and is_loopback_host(authority(target)):
        return None
    return f"token realm {authority(target)} is plain http and not the registry's own host"
