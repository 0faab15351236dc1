"""Auth challenges, Docker config credentials, the Authenticator (registry/auth.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from replicator.errors import AuthError, ConfigError
from replicator.registry.auth import (
    Authenticator,
    Challenge,
    Credentials,
    load_docker_config,
    parse_challenge,
)

HOST = "registry.example.com:5000"
SECRET = "s3cr3t-pa55"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


CHALLENGES = [
    ("bearer-quoted",
     'Bearer realm="https://auth.example.com/token",service="registry",scope="repository:a:pull"',
     "bearer",
     {"realm": "https://auth.example.com/token", "service": "registry",
      "scope": "repository:a:pull"}),
    ("comma-inside-quotes", 'Bearer realm="https://a/t",scope="repository:team/app:pull,push"',
     "bearer", {"realm": "https://a/t", "scope": "repository:team/app:pull,push"}),
    ("two-scopes-in-quotes", 'Bearer realm="r",scope="repository:a:pull repository:b:push"',
     "bearer", {"realm": "r", "scope": "repository:a:pull repository:b:push"}),
    ("unquoted", "Bearer realm=https://a/token,service=reg", "bearer",
     {"realm": "https://a/token", "service": "reg"}),
    ("spaces", 'Bearer realm = "r" ,  service="s"', "bearer", {"realm": "r", "service": "s"}),
    ("error-param", 'Bearer realm="r",error="insufficient_scope"', "bearer",
     {"realm": "r", "error": "insufficient_scope"}),
    ("basic", 'Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
    ("basic-bare", "Basic", "basic", {}),
    ("scheme-case", 'BEARER Realm="r"', "bearer", {"realm": "r"}),
    ("empty-quoted", 'Bearer realm="",service="s"', "bearer", {"realm": "", "service": "s"}),
    ("escaped-quote", r'Bearer realm="a\"b",service="c\\d"', "bearer",
     {"realm": 'a"b', "service": "c\\d"}),
    ("leading-space", '  Basic realm="x"', "basic", {"realm": "x"}),
    ("empty", "", "", {}),
]  # fmt: skip


class TestParseChallenge:
    """parse_challenge(): `WWW-Authenticate` into a scheme and parameters."""

    @pytest.mark.parametrize(
        ("header", "scheme", "params"),
        [case[1:] for case in CHALLENGES],
        ids=[case[0] for case in CHALLENGES],
    )
    def test_parse(self, header: str, scheme: str, params: dict[str, str]) -> None:
        """The scheme is lower-cased and every parameter is read, quoted or not."""
        assert parse_challenge(header) == Challenge(scheme, params)


class TestCredentials:
    """Credentials never show the password."""

    def test_repr_hides_password(self) -> None:
        """repr() and str() name the user but never the password."""
        creds = Credentials("alice", SECRET)
        assert "alice" in repr(creds)
        assert SECRET not in repr(creds)
        assert SECRET not in str(creds)

    def test_basic_header(self) -> None:
        """The Basic header is base64 of user:password."""
        assert Credentials("alice", "pw:x").basic_header() == "Basic " + _b64("alice:pw:x")


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


VALID_CONFIGS = [
    ("auth", {"auths": {HOST: {"auth": _b64(f"alice:{SECRET}")}}}, Credentials("alice", SECRET)),
    ("auth-colon-in-password", {"auths": {HOST: {"auth": _b64("alice:a:b")}}},
     Credentials("alice", "a:b")),
    ("auth-empty-password", {"auths": {HOST: {"auth": _b64("alice:")}}},
     Credentials("alice", "")),
    ("username-password", {"auths": {HOST: {"username": "bob", "password": SECRET}}},
     Credentials("bob", SECRET)),
    ("https-key", {"auths": {f"https://{HOST}": {"auth": _b64("c:d")}}}, Credentials("c", "d")),
    ("http-key", {"auths": {f"http://{HOST}": {"auth": _b64("c:d")}}}, Credentials("c", "d")),
    ("v2-url-key", {"auths": {f"https://{HOST}/v2/": {"auth": _b64("c:d")}}},
     Credentials("c", "d")),
    ("bare-key-wins", {"auths": {f"https://{HOST}": {"auth": _b64("x:y")},
                                 HOST: {"auth": _b64("c:d")}}}, Credentials("c", "d")),
    ("inline-beats-store", {"credsStore": "desktop", "auths": {HOST: {"auth": _b64("c:d")}}},
     Credentials("c", "d")),
    ("empty-entry-falls-through", {"auths": {HOST: {}, f"https://{HOST}": {"auth": _b64("c:d")}}},
     Credentials("c", "d")),
]  # fmt: skip


class TestLoadDockerConfig:
    """load_docker_config(): inline credentials from a Docker config.json."""

    @pytest.mark.parametrize(
        ("doc", "expected"),
        [case[1:] for case in VALID_CONFIGS],
        ids=[case[0] for case in VALID_CONFIGS],
    )
    def test_credentials(self, tmp_path: Path, doc: object, expected: Credentials) -> None:
        """Inline credentials for the host are found under any of the keys Docker writes."""
        assert load_docker_config(_write(tmp_path, doc), HOST) == expected

    def test_identity_token(self, tmp_path: Path) -> None:
        """An identity token alone (an OAuth2 refresh token) is refused, naming the field."""
        doc = {"auths": {HOST: {"identitytoken": "tok-123"}}}
        with pytest.raises(ConfigError, match="identitytoken"):
            load_docker_config(_write(tmp_path, doc), HOST)

    @pytest.mark.parametrize(
        "doc",
        [{"auths": {"other.example.com": {"auth": _b64("a:b")}}}, {"auths": {}}, {}, [], None,
         {"auths": {HOST: "not-an-object"}}],
        ids=["other-host", "empty-auths", "empty-object", "array", "null", "entry-not-object"],
    )  # fmt: skip
    def test_no_credentials(self, tmp_path: Path, doc: object) -> None:
        """A config without inline credentials for the host gives None."""
        assert load_docker_config(_write(tmp_path, doc), HOST) is None

    @pytest.mark.parametrize(
        "doc",
        [{"credsStore": "desktop"}, {"credHelpers": {HOST: "ecr-login"}},
         {"credsStore": "osxkeychain", "auths": {HOST: {}}}],
        ids=["creds-store", "cred-helpers", "store-with-empty-entry"],
    )  # fmt: skip
    def test_credential_helpers_refused(self, tmp_path: Path, doc: object) -> None:
        """A config that relies on credential helpers is an error naming the host and the file."""
        path = _write(tmp_path, doc)
        with pytest.raises(ConfigError, match="credential helpers") as info:
            load_docker_config(path, HOST)
        assert HOST in str(info.value)
        assert info.value.file == str(path)

    @pytest.mark.parametrize(
        "auth",
        ["not base64!", "YWxpY2U", _b64("no-colon"), _b64(":only-password"),
         base64.b64encode(b"\xff\xfe:x").decode(), 42, [SECRET]],
        ids=["not-base64", "bad-padding", "no-colon", "empty-user", "not-utf8", "number", "list"],
    )  # fmt: skip
    def test_bad_auth_field(self, tmp_path: Path, auth: object) -> None:
        """A malformed `auth` value is a ConfigError naming the field, never showing the value."""
        path = _write(tmp_path, {"auths": {HOST: {"auth": auth}}})
        with pytest.raises(ConfigError) as info:
            load_docker_config(path, HOST)
        assert info.value.field == f"auths.{HOST}.auth"
        assert f"auths.{HOST}.auth" in str(info.value)
        if isinstance(auth, str):
            assert auth not in str(info.value)

    def test_auths_not_object(self, tmp_path: Path) -> None:
        """`auths` that is not an object is a ConfigError naming the field."""
        with pytest.raises(ConfigError) as info:
            load_docker_config(_write(tmp_path, {"auths": ["x"]}), HOST)
        assert info.value.field == "auths"

    @pytest.mark.parametrize(
        "content", [b"{not json", b"\xff\xfe\x00garbage"], ids=["bad-json", "not-utf8"]
    )
    def test_unreadable_content(self, tmp_path: Path, content: bytes) -> None:
        """A file that is not JSON text is a ConfigError naming the file."""
        path = tmp_path / "config.json"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match="not valid JSON") as info:
            load_docker_config(path, HOST)
        assert info.value.file == str(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming the file."""
        path = tmp_path / "absent.json"
        with pytest.raises(ConfigError, match="cannot read") as info:
            load_docker_config(path, HOST)
        assert info.value.file == str(path)


REALM = "https://auth.example.com/token"


def _unauthorized(header: str | None, *, sent: str | None = None) -> httpx.Response:
    headers = {"www-authenticate": header} if header else {}
    request_headers = {"Authorization": sent} if sent else {}
    request = httpx.Request("GET", f"https://{HOST}/v2/", headers=request_headers)
    return httpx.Response(401, headers=headers, request=request)


class _TokenService:
    """A token realm at the transport boundary: records requests, answers as configured."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response


class TestAuthenticator:
    """Authenticator: Basic and Bearer challenges answered, tokens cached per scope."""

    async def test_basic_challenge(self) -> None:
        """A Basic challenge is answered with the credentials, then sent proactively."""
        async with httpx.AsyncClient() as http:
            auth = Authenticator(http, Credentials("alice", SECRET))
            header = await auth.answer(_unauthorized('Basic realm="r"'), "repository:a:pull")
            assert header == Credentials("alice", SECRET).basic_header()
            assert auth.header_for("repository:b:push") == header

    async def test_basic_without_credentials(self) -> None:
        """A Basic challenge with no credentials configured raises AuthError."""
        async with httpx.AsyncClient() as http:
            with pytest.raises(AuthError, match="none are configured"):
                await Authenticator(http, None).answer(_unauthorized("Basic"), "s")

    async def test_basic_refused_when_the_request_carried_the_credentials(self) -> None:
        """A 401 to a request that already carried our Basic credentials means refused."""
        credentials = Credentials("a", "b")
        async with httpx.AsyncClient() as http:
            auth = Authenticator(http, credentials)
            sent = await auth.answer(_unauthorized("Basic"), "s")
            with pytest.raises(AuthError, match="refused"):
                await auth.answer(_unauthorized("Basic", sent=sent), "s")

    async def test_concurrent_anonymous_401s_all_get_the_credentials(self) -> None:
        """Several first requests sent anonymously at once each get the Basic header back."""
        credentials = Credentials("a", "b")
        async with httpx.AsyncClient() as http:
            auth = Authenticator(http, credentials)
            first = await auth.answer(_unauthorized("Basic"), "s")
            second = await auth.answer(_unauthorized("Basic"), "s")
            assert first == second == credentials.basic_header()

    @pytest.mark.parametrize(
        "header", [None, 'Negotiate realm="x"'], ids=["no-challenge", "unsupported-scheme"]
    )
    async def test_unsupported_challenge(self, header: str | None) -> None:
        """A 401 without a Basic or Bearer challenge raises AuthError."""
        async with httpx.AsyncClient() as http:
            with pytest.raises(AuthError, match="unsupported challenge"):
                await Authenticator(http, None).answer(_unauthorized(header), "s")

    async def test_bearer_token_fetched_and_cached(self) -> None:
        """A Bearer challenge fetches a token per scope with Basic credentials and caches it."""
        service = _TokenService(httpx.Response(200, json={"token": "tok", "expires_in": 300}))
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = Authenticator(http, Credentials("alice", SECRET))
            challenge = f'Bearer realm="{REALM}",service="reg"'
            scope = "repository:a:pull repository:b:pull,push"
            assert await auth.answer(_unauthorized(challenge), scope) == "Bearer tok"
            assert auth.uses_bearer
            assert auth.header_for(scope) == "Bearer tok"
            assert auth.header_for("repository:other:pull") is None
        (request,) = service.requests
        assert request.url.params.get_list("scope") == scope.split()
        assert request.url.params["service"] == "reg"
        assert request.headers["authorization"] == Credentials("alice", SECRET).basic_header()

    async def test_anonymous_token_request(self) -> None:
        """Without credentials the token is requested without an Authorization header."""
        service = _TokenService(httpx.Response(200, json={"access_token": "anon"}))
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = Authenticator(http, None)
            header = await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s")
        assert header == "Bearer anon"
        assert "authorization" not in service.requests[0].headers

    @pytest.mark.parametrize(
        ("response", "message", "temporary"),
        [
            (httpx.Response(401), "refused the credentials", False),
            (httpx.Response(403), "refused the credentials", False),
            (httpx.Response(400), "answered 400", False),
            (httpx.Response(503), "answered 503", True),
            (httpx.Response(429), "answered 429", True),
            (httpx.Response(200, content=b"<html>"), "not a token", False),
            (httpx.Response(200, json=["token"]), "not a token", False),
            (httpx.Response(200, json={"token": ""}), "no token", False),
            (httpx.Response(200, json={"token": 5}), "no token", False),
            (httpx.Response(200, content=b" " * (1024 * 1024 + 1)), "too large", False),
        ],
        ids=["401", "403", "400", "503", "429", "html", "array", "empty-token",
             "number-token", "too-large"],
    )  # fmt: skip
    async def test_token_service_failures(
        self, response: httpx.Response, message: str, temporary: bool
    ) -> None:
        """A token service failure is an AuthError, temporary only for 429 and 5xx."""
        service = _TokenService(response)
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = Authenticator(http, Credentials("alice", SECRET))
            with pytest.raises(AuthError, match=message) as info:
                await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s")
        assert info.value.temporary is temporary
        assert SECRET not in str(info.value)

    async def test_bearer_without_realm(self) -> None:
        """A Bearer challenge that names no realm raises AuthError."""
        async with httpx.AsyncClient() as http:
            with pytest.raises(AuthError, match="no realm"):
                await Authenticator(http, None).answer(_unauthorized('Bearer service="s"'), "s")
