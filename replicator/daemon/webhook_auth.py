"""Who may post a source's webhooks: one check per authentication a registry can send.

Shared secrets are compared in constant time (`hmac.compare_digest`) and appear in no message:
a refusal says what was wrong (missing header, wrong scheme, bad signature), never the values.
Google's Pub/Sub push tokens are RS256 JWTs checked against the configured keys (a JWKS or a
PEM public key), the audience, the issuer and, when configured, the service account's email.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from replicator.config.loading import BridgeSourceConfig, Config, WebhookAuth
from replicator.daemon.http_messages import Request
from replicator.errors import ConfigError

# Pub/Sub push tokens live an hour; a minute of leeway covers clock skew between Google and us.
JWT_LEEWAY_SECONDS = 60
# Google signs its OIDC tokens with RS256 only; naming it refuses `none` and HMAC confusion.
JWT_ALGORITHMS = ("RS256",)
HMAC_HEADER = "x-hub-signature-256"
_HMAC_PREFIX = "sha256="


@dataclass(frozen=True, slots=True)
class SourceAuth:
    """The check for one source: `method`, the secret bytes, and what the method needs."""

    method: WebhookAuth
    secret: bytes = b""
    header: str = "authorization"
    username: str = ""
    query_parameter: str = "token"
    keys: tuple[tuple[str | None, RSAPublicKey], ...] = ()
    audience: str = ""
    issuer: str = ""
    email: str | None = None

    def refusal(self, request: Request) -> str | None:
        """Why `request` is not authenticated (no secret in it), or None when it is."""
        match self.method:
            case WebhookAuth.NONE:
                return None
            case WebhookAuth.BEARER:
                return self._bearer(request)
            case WebhookAuth.HEADER:
                return self._same(request.header(self.header), f"the {self.header} header")
            case WebhookAuth.BASIC:
                return self._basic(request)
            case WebhookAuth.QUERY:
                return self._same(
                    request.query.get(self.query_parameter), f"?{self.query_parameter}="
                )
            case WebhookAuth.HMAC_SHA256:
                return self._signature(request)
            case WebhookAuth.GOOGLE_OIDC:
                return self._google(request)

    def head_refusal(self, request: Request) -> str | None:
        """Why a request is refused from its head alone, before its body is read (None: read
        it). Only the HMAC signature needs the body; its header must be there already."""
        if self.method is WebhookAuth.HMAC_SHA256:
            given = request.header(HMAC_HEADER) or ""
            return None if given.startswith(_HMAC_PREFIX) else self._signature(request)
        return self.refusal(request)

    def _same(self, given: str | None, what: str) -> str | None:
        if not given:
            return f"{what} is missing"
        if not hmac.compare_digest(given.strip().encode(), self.secret):
            return f"{what} is wrong"
        return None

    def _bearer(self, request: Request) -> str | None:
        scheme, _, credentials = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return "a bearer token is required"
        return self._same(credentials, "the bearer token")

    def _basic(self, request: Request) -> str | None:
        scheme, _, credentials = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return "basic authentication is required"
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return "the basic credentials are not base64"
        user, _, password = decoded.partition(b":")
        same_user = hmac.compare_digest(user, self.username.encode())
        if not (hmac.compare_digest(password, self.secret) and same_user):
            return "the basic credentials are wrong"
        return None

    def _signature(self, request: Request) -> str | None:
        given = request.header(HMAC_HEADER) or ""
        if not given.startswith(_HMAC_PREFIX):
            return f"{HMAC_HEADER}: sha256=<hex> is missing"
        expected = hmac.new(self.secret, request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given[len(_HMAC_PREFIX) :].strip().lower(), expected):
            return f"{HMAC_HEADER} does not match the body"
        return None

    def _google(self, request: Request) -> str | None:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "a bearer JWT is required"
        try:
            kid = jwt.get_unverified_header(token.strip()).get("kid")
            key = self._key(kid)
            if key is None:
                return "the JWT is signed with a key that is not configured"
            claims = jwt.decode(
                token.strip(),
                key=key,
                algorithms=list(JWT_ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=JWT_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            return f"the JWT is not valid: {type(exc).__name__}"
        if self.email is not None and (
            claims.get("email") != self.email or claims.get("email_verified") is not True
        ):
            return "the JWT is not of the configured service account"
        return None

    def _key(self, kid: object) -> RSAPublicKey | None:
        for key_id, key in self.keys:
            if key_id is None or key_id == kid:
                return key
        return None


def auth_table(config: Config) -> dict[str, SourceAuth]:
    """Each configured registry's check: its [bridge.sources] entry, else the bridge token,
    else none (the config refuses that on a non-loopback listener)."""
    table: dict[str, SourceAuth] = {}
    token = config.bridge.token
    for name in config.registries:
        source = config.bridge.sources.get(name)
        if source is not None:
            table[name] = source_auth(source, name)
        elif token is not None:
            table[name] = SourceAuth(WebhookAuth.BEARER, token.get_secret_value().encode())
        else:
            table[name] = SourceAuth(WebhookAuth.NONE)
    return table


def source_auth(source: BridgeSourceConfig, name: str) -> SourceAuth:
    """The check a [bridge.sources.<name>] section configures; ConfigError on unusable keys."""
    secret = source.secret.get_secret_value().encode() if source.secret is not None else b""
    keys = _keys(source.keys, name) if source.auth is WebhookAuth.GOOGLE_OIDC else ()
    return SourceAuth(
        method=source.auth,
        secret=secret,
        header=source.header.lower(),
        username=source.username or "",
        query_parameter=source.query_parameter,
        keys=keys,
        audience=source.audience or "",
        issuer=source.issuer,
        email=source.email,
    )


def _keys(text: str | None, name: str) -> tuple[tuple[str | None, RSAPublicKey], ...]:
    """(kid, public key) pairs from a JWKS document, or one PEM public key (any kid)."""
    field = f"bridge.sources.{name}.keys_file"
    if not text:
        raise ConfigError("no keys were read", field=field)
    try:
        if text.lstrip().startswith("{"):
            keys = jwt.PyJWKSet.from_dict(json.loads(text)).keys
            found = tuple((k.key_id, k.key) for k in keys if isinstance(k.key, RSAPublicKey))
        else:
            pem = load_pem_public_key(text.encode())
            found = ((None, pem),) if isinstance(pem, RSAPublicKey) else ()
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(f"not a JWKS or PEM public key: {exc}", field=field) from exc
    if not found:
        raise ConfigError("holds no RSA public key (Google signs with RS256)", field=field)
    return found
