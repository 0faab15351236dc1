"""A Docker token issuer for docker-registry's `auth: token`, on a free loopback port.

It implements what registries' token services do, and the registry really checks every token
it signs (issuer, audience, expiry, signature against `rootcertbundle`):
- `GET /token?service=..&scope=..` (the Docker token spec), with Basic credentials or none;
  a Basic password may also be a refresh token the issuer gave out (ACR accepts them so);
  `offline_token=true` adds a refresh token to the answer.
- `POST /token` (OAuth2, RFC 6749 §4.3 and §6): `grant_type=password` (with
  `access_type=offline` for a refresh token) and `grant_type=refresh_token`.
Authenticated users get the actions they ask for; anonymous callers get `pull` on the
repositories made public. `GET /garbage` answers 200 with an HTML page instead of a token, as a
token service behind a captive portal or a broken proxy does. Tokens are RS256 JWTs whose `kid`
is the libtrust key ID of the signing key, which is how distribution 2.8 finds the key in
`rootcertbundle`.
`hold()` makes every token request wait until `release()`, as a slow token service does.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.ports import free_port

SERVICE = "replicator-tests"
ISSUER = "replicator-test-issuer"
# Long enough that no test sees a token expire unless it asks for a short lifetime.
DEFAULT_LIFETIME_SECONDS = 300
# RSA 2048 is what distribution's examples use; generating it takes ~50 ms.
KEY_BITS = 2048
# A held token request is answered after this at the latest, so no test hangs on one.
HOLD_LIMIT_SECONDS = 60.0


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The libtrust key ID distribution 2.8 indexes `rootcertbundle` keys by: base32 of the
    first 240 bits of SHA-256 of the DER public key, in colon-separated groups of four."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


@dataclass(frozen=True)
class TokenRequest:
    """One request the issuer answered: how it was asked, for whom, and the status."""

    method: str
    grant: str  # "get", "password", "refresh_token" or what the client sent
    account: str  # "" when anonymous
    scopes: tuple[str, ...]
    status: int
    query: str = ""  # the query string as sent (a realm's own parameters stay in it)


class TokenIssuer:
    """The issuer, serving on a thread until `stop()`."""

    def __init__(self, *, oauth: bool = True, lifetime: int = DEFAULT_LIFETIME_SECONDS) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="replicator-token-issuer-"))
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        self.kid = libtrust_key_id(self._key.public_key())
        self.cert_path = self.workdir / "issuer.pem"
        self.cert_path.write_bytes(self._certificate().public_bytes(serialization.Encoding.PEM))
        self.oauth = oauth  # False: POST answers 404, as token services without OAuth2 do
        # False: grant_type=refresh_token answers 400 unsupported_grant_type (RFC 6749 §5.2), as
        # a token service taking only passwords by POST does
        self.refresh_grant = True
        # True: a refresh_token grant answers a new refresh token and the one it used is refused
        # from then on (rotation, RFC 6749 §6 and §10.4, as Azure AD and Auth0 do)
        self.rotate_refresh = False
        self.lifetime = lifetime
        self.users: dict[str, str] = {}
        self.public: set[str] = set()
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> account
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        # Cleared by `hold()`: token requests wait for it (counted in `held_requests`).
        self._answering = threading.Event()
        self._answering.set()
        self.held_requests = 0
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _certificate(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self._key, hashes.SHA256())
        )

    def rotate_key(self) -> None:
        """Sign with a new key from now on, and trust only it in `rootcertbundle` (a registry
        restarted after this refuses every token signed before)."""
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        self.kid = libtrust_key_id(self._key.public_key())
        self.cert_path.write_bytes(self._certificate().public_bytes(serialization.Encoding.PEM))

    def registry_auth(self) -> dict[str, Any]:
        """The `auth:` section of a docker-registry config that trusts this issuer."""
        return {
            "token": {
                "realm": self.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self.cert_path),
            }
        }

    def offline_token(self, account: str, password: str) -> str:
        """A refresh token for `account`, as `docker login` obtains an identity token (the
        OAuth2 password grant with access_type=offline) — asked over HTTP like a client."""
        answer = httpx.post(
            self.realm,
            data={
                "grant_type": "password",
                "username": account,
                "password": password,
                "service": SERVICE,
                "client_id": "tests",
                "access_type": "offline",
            },
        )
        answer.raise_for_status()
        token: str = answer.json()["refresh_token"]
        return token

    def grants(self, grant: str) -> list[TokenRequest]:
        """The answered requests of one grant kind."""
        with self._lock:
            return [r for r in self.requests if r.grant == grant]

    def hold(self) -> None:
        """Keep every token request waiting from now on, until `release()`."""
        self._answering.clear()

    def release(self) -> None:
        """Answer the held token requests, and the later ones at once."""
        self._answering.set()

    def _wait_if_held(self) -> None:
        if self._answering.is_set():
            return
        with self._lock:
            self.held_requests += 1
        self._answering.wait(HOLD_LIMIT_SECONDS)

    def stop(self) -> None:
        """Stop serving."""
        self.release()
        self._server.shutdown()
        self._server.server_close()

    # The logic of one request, called from the handler thread.

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def password_ok(self, user: str, password: str) -> bool:
        """Whether `password` is `user`'s current password."""
        with self._lock:
            known = self.users.get(user)
        return known is not None and secrets.compare_digest(known, password)

    def account_of(self, user: str, password: str) -> str | None:
        """The account Basic credentials authenticate: a user's password, or a refresh token
        as the password whatever the user name (as ACR accepts its refresh tokens)."""
        if self.password_ok(user, password):
            return user
        with self._lock:
            return self.refresh_tokens.get(password)

    def new_refresh_token(self, account: str) -> str:
        """A refresh token for `account`."""
        token = "rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self.refresh_tokens[token] = account
        return token

    def answer(self, account: str, scopes: list[str], *, refresh: bool) -> dict[str, Any]:
        """The token answer for `account` ("" = anonymous) and the scopes asked for."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": account,
            # distribution 2.8 reads `aud` as one string, not a list.
            "aud": SERVICE,
            "exp": now + self.lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": [grant for scope in scopes if (grant := self._access(account, scope))],
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": self.lifetime,
            "issued_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
        }
        if refresh and account:
            body["refresh_token"] = self.new_refresh_token(account)
        return body

    def _access(self, account: str, scope: str) -> dict[str, Any] | None:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            return None
        wanted = [a for a in actions.split(",") if a]
        if not account:
            with self._lock:
                wanted = ["pull"] if "pull" in wanted and name in self.public else []
        return {"type": "repository", "name": name, "actions": wanted} if wanted else None


def _handler(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read `issuer.requests`."""

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            issuer._wait_if_held()
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            scopes = [s for value in query.get("scope", []) for s in value.split()]
            if parts.path == "/garbage":
                issuer._record(TokenRequest("GET", "garbage", "", tuple(scopes), 200, parts.query))
                page = b"<html><body>Sign in to continue</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            account = ""
            header = self.headers.get("Authorization", "")
            if header.lower().startswith("basic "):
                try:
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                except ValueError:
                    user, password = "", ""
                found = issuer.account_of(user, password)
                if found is None:
                    issuer._record(
                        TokenRequest("GET", "get", user, tuple(scopes), 401, parts.query)
                    )
                    self._send(401, {"details": "incorrect username or password"})
                    return
                account = found
            issuer._record(TokenRequest("GET", "get", account, tuple(scopes), 200, parts.query))
            offline = query.get("offline_token", [""])[0] == "true"
            self._send(200, issuer.answer(account, scopes, refresh=offline))

        def do_POST(self) -> None:
            issuer._wait_if_held()
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            grant = form.get("grant_type", "")
            scopes = form.get("scope", "").split()
            if not issuer.oauth:
                issuer._record(TokenRequest("POST", grant, "", tuple(scopes), 404))
                self._send(404, {"details": "not found"})
                return
            account: str | None = None
            if grant == "password":
                user = form.get("username", "")
                account = user if issuer.password_ok(user, form.get("password", "")) else None
            elif grant == "refresh_token" and issuer.refresh_grant:
                with issuer._lock:
                    used = form.get("refresh_token", "")
                    account = issuer.refresh_tokens.get(used)
                    if issuer.rotate_refresh:
                        issuer.refresh_tokens.pop(used, None)
            else:
                issuer._record(TokenRequest("POST", grant, "", tuple(scopes), 400))
                self._send(400, {"error": "unsupported_grant_type"})
                return
            if account is None:
                issuer._record(TokenRequest("POST", grant, "", tuple(scopes), 400))
                self._send(400, {"error": "invalid_grant"})
                return
            issuer._record(TokenRequest("POST", grant, account, tuple(scopes), 200))
            offline = (grant == "password" and form.get("access_type") == "offline") or (
                grant == "refresh_token" and issuer.rotate_refresh
            )
            self._send(200, issuer.answer(account, scopes, refresh=offline))

    return Handler
