"""[bridge]: the registry-webhook receiver, and how each source's webhooks look and authenticate
([bridge.sources.<name>])."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, PrivateAttr, SecretStr

from replicator.config.fields import ConfigPath, Listen, Listener, RegistryName, Section
from replicator.domain.events.webhooks import FORMATS


def _check_format(value: str) -> str:
    known = ["auto", *(f.name for f in FORMATS)]
    if value not in known:
        raise ValueError(f"{value!r} is not a webhook format: one of {', '.join(known)}")
    return value


class WebhookAuth(StrEnum):
    """How a source registry's webhooks prove who sent them ([bridge.sources.<name>] auth)."""

    NONE = "none"  # only on a loopback listener
    BEARER = "bearer"  # Authorization: Bearer <secret>
    HEADER = "header"  # <header>: <secret>, verbatim (Harbor, ACR, Artifactory, EventBridge key)
    BASIC = "basic"  # Authorization: Basic <username>:<secret> (EventBridge connections)
    QUERY = "query"  # ?<query_parameter>=<secret> in the URL (Quay)
    HMAC_SHA256 = "hmac-sha256"  # X-Hub-Signature-256: sha256=<hex HMAC of the raw body> (GitHub)
    GOOGLE_OIDC = "google-oidc"  # Authorization: Bearer <Google-signed JWT> (Pub/Sub push)


class BridgeSourceConfig(Section):
    """[bridge.sources.<name>]: how the webhooks of one source registry look and authenticate."""

    format: Annotated[str, AfterValidator(_check_format)] = "auto"
    auth: Annotated[WebhookAuth, Field(strict=False)]
    secret_file: ConfigPath | None = None
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")] = "Authorization"
    username: str | None = None
    query_parameter: Annotated[str, Field(min_length=1)] = "token"
    # google-oidc: a JWKS (JSON) or PEM public key file, the audience the subscription was
    # given, and optionally the issuer and the push service account's email.
    keys_file: ConfigPath | None = None
    audience: str | None = None
    issuer: str = "https://accounts.google.com"
    email: str | None = None
    _secret: SecretStr | None = PrivateAttr(default=None)
    _keys: str | None = PrivateAttr(default=None)

    @property
    def secret(self) -> SecretStr | None:
        """The shared secret read from `secret_file`."""
        return self._secret

    @property
    def keys(self) -> str | None:
        """The text of `keys_file` (JWKS or PEM)."""
        return self._keys


class BridgeConfig(Listener):
    """[bridge]: the registry-webhook receiver: an optional bearer token read from a file (for
    sources without their own [bridge.sources.<name>]), TLS, and per-source settings."""

    listen: Listen = "127.0.0.1:9479"
    token_file: ConfigPath | None = None
    tls_cert: ConfigPath | None = None
    tls_key: ConfigPath | None = None
    client_ca: ConfigPath | None = None
    sources: dict[RegistryName, BridgeSourceConfig] = Field(default_factory=dict)
    _token: SecretStr | None = PrivateAttr(default=None)

    @property
    def token(self) -> SecretStr | None:
        """The bearer token webhooks must present, read from `token_file`."""
        return self._token
