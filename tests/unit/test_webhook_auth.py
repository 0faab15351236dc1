"""Webhook authentication per source: each method, each way a request can fail it, and the
[bridge.sources] configuration that sets it up."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from replicator.cli import main
from replicator.config.loading import WebhookAuth, load_config
from replicator.daemon.http_messages import Request
from replicator.daemon.webhook_auth import SourceAuth, auth_table
from replicator.errors import ConfigError

SECRET = b"s3cret-value"
BODY = b'{"action":"published"}'
AUDIENCE = "https://bridge.example.com/events/gar"
ISSUER = "https://accounts.google.com"
EMAIL = "push@example-project.iam.gserviceaccount.com"


def request(headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> Request:
    """A POST with `headers` (lower-case names), `query` and BODY."""
    return Request("POST", "/events/src", query or {}, headers or {}, BODY)


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization: Basic header."""
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def signature(secret: bytes, body: bytes = BODY) -> dict[str, str]:
    """GitHub's X-Hub-Signature-256 of `body`."""
    return {"x-hub-signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}


@pytest.mark.parametrize(
    ("auth", "good", "bad"),
    [
        pytest.param(SourceAuth(WebhookAuth.BEARER, SECRET),
                     request({"authorization": "Bearer s3cret-value"}),
                     [request(), request({"authorization": "Bearer nope"}),
                      request({"authorization": "Basic s3cret-value"})], id="bearer"),
        pytest.param(SourceAuth(WebhookAuth.HEADER, SECRET, header="x-jfrog-event-auth"),
                     request({"x-jfrog-event-auth": "s3cret-value"}),
                     [request(), request({"x-jfrog-event-auth": "s3cret-valuf"}),
                      request({"authorization": "s3cret-value"})], id="header"),
        pytest.param(SourceAuth(WebhookAuth.BASIC, SECRET, username="eb"),
                     request(basic("eb", "s3cret-value")),
                     [request(), request(basic("other", "s3cret-value")),
                      request(basic("eb", "wrong")), request({"authorization": "Basic %%%"}),
                      request({"authorization": "Bearer s3cret-value"})], id="basic"),
        pytest.param(SourceAuth(WebhookAuth.QUERY, SECRET),
                     request(query={"token": "s3cret-value"}),
                     [request(), request(query={"token": "x"}),
                      request(query={"secret": "s3cret-value"})], id="query"),
        pytest.param(SourceAuth(WebhookAuth.HMAC_SHA256, SECRET),
                     request(signature(SECRET)),
                     [request(), request(signature(b"other")),
                      request({"x-hub-signature-256": "sha1=00"}),
                      request(signature(SECRET, b"another body"))], id="hmac"),
        pytest.param(SourceAuth(WebhookAuth.NONE), request(), [], id="none"),
    ],
)  # fmt: skip
def test_shared_secret_methods(auth: SourceAuth, good: Request, bad: list[Request]) -> None:
    """The right credential passes; missing, wrong or wrongly placed ones are refused."""
    assert auth.refusal(good) is None
    for attempt in bad:
        assert auth.refusal(attempt) is not None


def test_refusals_never_contain_the_secret() -> None:
    """What a refusal says (logged, answered) holds neither the secret nor what was sent."""
    auth = SourceAuth(WebhookAuth.BEARER, SECRET)
    why = auth.refusal(request({"authorization": "Bearer s3cret-valu"}))
    assert why is not None
    assert "s3cret" not in why


# -- Google OIDC (Pub/Sub push) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """Google's signing key and an attacker's."""
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def token(key: rsa.RSAPrivateKey, **changes: Any) -> str:
    """A Pub/Sub push JWT signed by `key`, with claims changed (None removes one)."""
    now = int(time.time())
    claims = {"aud": AUDIENCE, "iss": ISSUER, "email": EMAIL, "email_verified": True,
              "iat": now, "exp": now + 3600, "sub": "1234"}  # fmt: skip
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def google_auth(key: rsa.RSAPrivateKey, email: str | None = EMAIL) -> SourceAuth:
    """The check configured with `key`'s public half."""
    return SourceAuth(
        WebhookAuth.GOOGLE_OIDC,
        keys=(("k1", key.public_key()),),
        audience=AUDIENCE,
        issuer=ISSUER,
        email=email,
    )


def bearer(value: str) -> Request:
    """A request carrying `value` as its bearer token."""
    return request({"authorization": f"Bearer {value}"})


def test_google_token_is_accepted(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> None:
    """A token signed by the configured key, for our audience, from Google, passes."""
    assert google_auth(keys[0]).refusal(bearer(token(keys[0]))) is None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda k: token(k[1]), id="other-key"),
        pytest.param(lambda k: token(k[0], aud="https://elsewhere"), id="audience"),
        pytest.param(lambda k: token(k[0], iss="https://evil.example"), id="issuer"),
        pytest.param(lambda k: token(k[0], exp=int(time.time()) - 3600), id="expired"),
        pytest.param(lambda k: token(k[0], exp=None), id="no-exp"),
        pytest.param(lambda k: token(k[0], email="other@x.iam.gserviceaccount.com"), id="email"),
        pytest.param(lambda k: token(k[0], email_verified=False), id="email-unverified"),
        pytest.param(lambda k: jwt.encode({"aud": AUDIENCE, "iss": ISSUER}, None,
                                          algorithm="none"), id="alg-none"),
        pytest.param(lambda k: jwt.encode({"aud": AUDIENCE, "iss": ISSUER, "exp": 2**40},
                                          b"a-shared-secret-of-32-bytes-or-more!",
                                          algorithm="HS256", headers={"kid": "k1"}),
                     id="hs256"),
        pytest.param(lambda k: "not.a.jwt", id="garbage"),
        pytest.param(lambda k: token(k[0])[:-10], id="truncated"),
    ],
)  # fmt: skip
def test_google_token_refused(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey], make: Any) -> None:
    """Wrong key, audience, issuer, expiry, account, algorithm or shape: refused."""
    assert google_auth(keys[0]).refusal(bearer(make(keys))) is not None


def test_google_needs_a_bearer_token(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> None:
    """Without Authorization: Bearer the request is refused."""
    assert google_auth(keys[0]).refusal(request()) is not None


# -- configuration ----------------------------------------------------------------------------

REGISTRY = """
[registries.src]
account = "111122223333"
region = "us-east-1"
url = "http://127.0.0.1:5001"
"""


def config_text(bridge: str) -> str:
    """A config with one registry `src` and this [bridge] section."""
    return f"version = 1\n[bridge]\n{bridge}\n{REGISTRY}"


def load(tmp_path: Path, bridge: str) -> Any:
    """Load the config with this [bridge] section from tmp_path."""
    path = tmp_path / "replicator.toml"
    path.write_text(config_text(bridge))
    return load_config(path)


def test_config_sets_up_each_method(tmp_path: Path, keys: Any) -> None:
    """[bridge.sources.src] with a secret file and JWKS keys builds the matching check."""
    (tmp_path / "s.secret").write_text("s3cret-value\n")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys[0].public_key()))
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256"}]})
    )
    config = load(tmp_path, '[bridge.sources.src]\nauth = "basic"\nusername = "eb"\n'
                  'secret_file = "s.secret"\nformat = "ecr"')  # fmt: skip
    check = auth_table(config)["src"]
    assert check.refusal(request(basic("eb", "s3cret-value"))) is None
    config = load(tmp_path, '[bridge.sources.src]\nauth = "google-oidc"\n'
                  f'keys_file = "jwks.json"\naudience = "{AUDIENCE}"')  # fmt: skip
    assert auth_table(config)["src"].refusal(bearer(token(keys[0]))) is None


def test_pem_public_key_is_accepted(tmp_path: Path, keys: Any) -> None:
    """keys_file may be one PEM public key instead of a JWKS."""
    pem = (
        keys[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "key.pem").write_bytes(pem)
    config = load(tmp_path, '[bridge.sources.src]\nauth = "google-oidc"\n'
                  f'keys_file = "key.pem"\naudience = "{AUDIENCE}"')  # fmt: skip
    assert auth_table(config)["src"].refusal(bearer(token(keys[0]))) is None


def test_unusable_keys_file_is_a_config_error(tmp_path: Path) -> None:
    """A keys_file that is neither JWKS nor PEM is refused naming the field."""
    (tmp_path / "bad.pem").write_text("not a key")
    config = load(tmp_path, '[bridge.sources.src]\nauth = "google-oidc"\n'
                  f'keys_file = "bad.pem"\naudience = "{AUDIENCE}"')  # fmt: skip
    with pytest.raises(ConfigError, match="keys_file"):
        auth_table(config)


@pytest.mark.parametrize(
    ("bridge", "message"),
    [
        pytest.param('[bridge.sources.src]\nauth = "bearer"', "needs a secret_file",
                     id="no-secret"),
        pytest.param('[bridge.sources.src]\nauth = "google-oidc"', "needs keys_file", id="no-keys"),
        pytest.param('[bridge.sources.nowhere]\nauth = "none"', "not a registry", id="unknown"),
        pytest.param('[bridge.sources.src]\nauth = "magic"', "auth", id="unknown-method"),
        pytest.param('[bridge.sources.src]\nauth = "none"\nformat = "svn"', "format",
                     id="unknown-format"),
        pytest.param('listen = "0.0.0.0:9479"', "without authentication", id="exposed-open"),
        pytest.param('listen = "0.0.0.0:9479"\ntoken_file = "t"\n[bridge.sources.src]\n'
                     'auth = "none"', "without authentication", id="exposed-none"),
        pytest.param('tls_cert = "c.pem"', "go together", id="cert-without-key"),
        pytest.param('client_ca = "c.pem"', "need TLS", id="client-ca-without-tls"),
    ],
)  # fmt: skip
def test_config_refuses(tmp_path: Path, bridge: str, message: str) -> None:
    """Missing secrets, unknown sources or methods, and open sources off loopback are refused."""
    (tmp_path / "t").write_text("token\n")
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, bridge)


def test_open_source_on_loopback_is_allowed(tmp_path: Path) -> None:
    """Without any authentication the bridge may still listen on loopback."""
    config = load(tmp_path, 'listen = "127.0.0.1:9479"')
    assert auth_table(config)["src"].method is WebhookAuth.NONE


ROOT = Path(__file__).resolve().parents[2]


def test_config_check_shows_each_source(capsys: pytest.CaptureFixture[str]) -> None:
    """`config check` says how the bridge listens and how each source authenticates."""
    assert main(["config", "check", str(ROOT / "configs" / "webhooks.toml")]) == 0
    captured = capsys.readouterr()
    assert "webhooks (bridge on 0.0.0.0:9479, HTTPS, client certificates required)" in captured.out
    # Columns are as wide as the longest source name.
    assert re.search(r"\n  quay +auth: query; format: quay\n", captured.out)
    assert re.search(r"\n  alibaba +auth: query; format: alibaba\n", captured.out)
    assert re.search(r"\n  dr +auth: bearer \(bridge.token_file\); format: auto\n", captured.out)
    assert "warning" not in captured.err


def test_config_check_marks_open_sources(capsys: pytest.CaptureFixture[str]) -> None:
    """On loopback, sources without authentication pass the check, marked loopback only."""
    assert main(["config", "check", "--json", str(ROOT / "configs" / "demo.toml")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["webhooks"]["sources"]["use1"] == {
        "auth": "none (loopback only)", "format": "auto"
    }  # fmt: skip
