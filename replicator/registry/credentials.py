"""Credentials and where they come from: the seam between a registry client and its secrets.

A registry client holds a `CredentialProvider`, never a password: it asks the provider when the
registry first demands authentication (so a provider that cannot answer never blocks anonymous
access), again on every request (a provider caches; one whose secret expires, such as an ECR
token, renews it there), and with `refresh=True` after the registry or its token service refused
what it gave (a rotated password file, a new token from a credential helper).

Providers: `StaticCredentials` (a password from the config or the command line),
`dockerconfig.DockerConfigCredentials` (Docker's config.json and podman's auth.json, with
credential helpers). A provider's equality says "same source": when a config reload builds a
provider equal to the one a client holds, the client keeps its cached credentials and tokens;
when it differs (a rotated password), the client switches to it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password, or an identity token (an OAuth2 refresh token, as `docker
    login` stores for ACR and GAR); secrets never appear in repr()."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def basic_header(self) -> str:
        """The value of a Basic `Authorization` header (an identity token stands in for an
        empty password: token services that only know the GET flow accept it so)."""
        secret = self.password or self.identity_token or ""
        raw = f"{self.username}:{secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()


class CredentialProvider(Protocol):
    """Where one registry's credentials come from.

    `get()` raises AuthError (temporary or not, saying which source failed and why) when the
    source cannot answer — a credential helper missing or failing; it returns None when the
    source has nothing for this registry (anonymous). It is called often: cache inside.
    """

    async def get(self, *, refresh: bool = False) -> Credentials | None:
        """The credentials to use now; `refresh` asks the source again, bypassing any cache."""
        ...

    def cached(self) -> bool:
        """Whether `get()` answers now from what the provider holds, neither asking its source
        (a credential helper, a token service) nor waiting for a call to it to end: the
        Authenticator gives the job's slot back around any other `get()` (registry/auth.py)."""
        ...

    @property
    def source(self) -> str:
        """Where the credentials come from, for messages and logs (never a secret)."""
        ...


@dataclass(frozen=True, slots=True)
class StaticCredentials:
    """Credentials fixed when the config was read (username and password_file, --src-creds);
    a rotated password file is a new, unequal provider after a reload."""

    credentials: Credentials
    source: str = "configured credentials"

    async def get(self, *, refresh: bool = False) -> Credentials | None:
        """The configured credentials."""
        return self.credentials

    def cached(self) -> bool:
        """Always: they are held."""
        return True
