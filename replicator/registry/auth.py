"""Registry authentication: anonymous, Basic, and the Bearer token challenge with a token cache.

The flow (distribution's token spec): a request answered 401 carries `WWW-Authenticate`. `Basic`
means send the credentials on every request. `Bearer realm=..,service=..,scope=..` means fetch a
token from the realm for that scope (with Basic credentials when we have them) and retry once.
Tokens are cached per scope until shortly before they expire.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from replicator.errors import AuthError, ConfigError, TransportError

# Tokens without `expires_in` live 60 s per the token spec; refresh a little before expiry.
DEFAULT_TOKEN_LIFETIME = 60.0
TOKEN_EXPIRY_MARGIN = 10.0
# Token responses are small JSON; refuse to read more (a misconfigured realm could stream anything).
MAX_TOKEN_RESPONSE = 1024 * 1024
_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password (or identity token); the password never appears in repr()."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        """The value of a Basic `Authorization` header."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed `WWW-Authenticate` header."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """Parse `Bearer realm="..",service="..",scope=".."` (or `Basic realm=".."`)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): _unquote(m.group(2)) if m.group(2) is not None else m.group(3)
        for m in _PARAM_RE.finditer(rest)
    }
    return Challenge(scheme=scheme.lower(), params=params)


def _unquote(value: str) -> str:
    # RFC 9110 quoted-pair: a backslash escapes the next character inside a quoted string.
    return re.sub(r"\\(.)", r"\1", value)


def load_docker_config(path: str | Path, host: str) -> Credentials | None:
    """Credentials for `host` from a Docker `config.json` (`auths.<host>.auth`: user:pass)."""
    file = Path(path)
    try:
        doc = json.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(file)) from exc
    except ValueError as exc:  # bad JSON, or bytes that are not UTF-8
        raise ConfigError(f"not valid JSON: {exc}", file=str(file)) from exc
    auths = doc.get("auths", {}) if isinstance(doc, dict) else {}
    if not isinstance(auths, dict):
        raise ConfigError("auths is not an object", file=str(file), field="auths")
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v2/"):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("identitytoken") and not entry.get("auth"):
            # An identity token is an OAuth2 refresh token (docker login to Azure ACR and the
            # like); token services want it in a POST grant we do not implement, so refuse it
            # clearly rather than send it as a password and get a confusing 401.
            raise ConfigError(
                "identity tokens (OAuth2 refresh tokens) are not supported; "
                "use a username and password_file",
                file=str(file),
                field=f"auths.{key}.identitytoken",
            )
        if entry.get("auth"):
            bad = ConfigError(
                "is not base64 of user:password", file=str(file), field=f"auths.{key}.auth"
            )
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode()
            except (TypeError, ValueError) as exc:  # not a string, not base64, not UTF-8
                raise bad from exc
            user, colon, password = decoded.partition(":")
            if not user or not colon:
                raise bad
            return Credentials(user, password)
        if "username" in entry and "password" in entry:
            return Credentials(str(entry["username"]), str(entry["password"]))
    if isinstance(doc, dict) and (doc.get("credsStore") or doc.get("credHelpers")):
        raise ConfigError(
            f"no inline credentials for {host}; credential helpers are not supported, "
            "use a password_file instead",
            file=str(file),
        )
    return None


class Authenticator:
    """Answers auth challenges for one registry and caches the tokens it obtains."""

    def __init__(self, http: httpx.AsyncClient, credentials: Credentials | None) -> None:
        self._http = http
        self._credentials = credentials
        self._basic = False
        self._bearer: Challenge | None = None
        self._tokens: dict[str, tuple[str, float]] = {}

    def header_for(self, scope: str) -> str | None:
        """The `Authorization` value to send proactively for `scope`, if one is known."""
        if self._basic and self._credentials:
            return self._credentials.basic_header()
        cached = self._tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        return None

    @property
    def uses_bearer(self) -> bool:
        """Whether this registry asked for Bearer tokens (so a new scope needs a token first)."""
        return self._bearer is not None

    async def answer(self, response: httpx.Response, scope: str) -> str:
        """Given a 401 response, obtain credentials for `scope` or raise AuthError."""
        header = response.headers.get("www-authenticate", "")
        challenge = parse_challenge(header) if header else Challenge("", {})
        if challenge.scheme == "basic":
            if self._credentials is None:
                raise AuthError(
                    "registry requires Basic credentials and none are configured", status=401
                )
            basic = self._credentials.basic_header()
            # Refused only if this very request carried them: concurrent first requests all go
            # out anonymous and all come back 401 before any of them has learnt the scheme.
            if response.request.headers.get("authorization") == basic:
                raise AuthError("registry refused the configured credentials", status=401)
            self._basic = True
            return basic
        if challenge.scheme == "bearer":
            self._bearer = challenge
            self._tokens.pop(scope, None)
            return f"Bearer {await self.fetch_token(scope)}"
        raise AuthError(
            f"registry answered 401 with an unsupported challenge {challenge.scheme!r}", status=401
        )

    async def fetch_token(self, scope: str) -> str:
        """Fetch (and cache) a Bearer token for `scope` from the challenge's realm."""
        assert self._bearer is not None
        realm = self._bearer.params.get("realm")
        if not realm:
            raise AuthError("Bearer challenge names no realm", status=401)
        # Several scopes (a mount needs push on one repository and pull on another) are sent as
        # repeated `scope` parameters, as the Docker client does.
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("service", self._bearer.params.get("service", ""))
        ]
        params.extend(("scope", part) for part in scope.split())
        headers = {}
        if self._credentials:
            headers["Authorization"] = self._credentials.basic_header()
        try:
            resp = await self._http.get(realm, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise TransportError(
                f"token service {httpx.URL(realm).host}: {type(exc).__name__}"
            ) from exc
        if resp.status_code in (401, 403):
            raise AuthError(
                f"token service refused the credentials ({resp.status_code})",
                status=resp.status_code,
            )
        if resp.status_code >= 400:
            raise AuthError(
                f"token service answered {resp.status_code}",
                status=resp.status_code,
                temporary=resp.status_code >= 500 or resp.status_code == 429,
            )
        if len(resp.content) > MAX_TOKEN_RESPONSE:
            raise AuthError("token response is too large", status=resp.status_code)
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError) as exc:
            raise AuthError(
                "token service answered something that is not a token", status=resp.status_code
            ) from exc
        if not isinstance(token, str) or not token:
            raise AuthError("token service answered no token", status=resp.status_code)
        self._tokens[scope] = (token, time.monotonic() + max(1.0, lifetime - TOKEN_EXPIRY_MARGIN))
        return token
