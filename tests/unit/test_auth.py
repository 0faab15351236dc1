"""Auth challenges and the Authenticator (registry/challenges.py, registry/auth.py)."""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.errors import AuthError
from replicator.registry.auth import Authenticator
from replicator.registry.challenges import Challenge, choose_challenge, parse_challenges
from replicator.registry.credentials import CredentialProvider, Credentials, StaticCredentials
from replicator.registry.retry import RetryPolicy

HOST = "registry.example.com:5000"
SECRET = "s3cr3t-pa55"
REALM = "https://auth.example.com/token"


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
    # Several challenges in one header (RFC 9110 §11.6.1): the Bearer one is answered.
    ("bearer-then-basic", 'Bearer realm="https://a/t",service="reg", Basic realm="x"', "bearer",
     {"realm": "https://a/t", "service": "reg"}),
    ("basic-then-bearer", 'Basic realm="x", Bearer realm="https://a/t",service="reg"', "bearer",
     {"realm": "https://a/t", "service": "reg"}),
    ("bare-basic-then-bearer", 'Basic, Bearer realm="r"', "bearer", {"realm": "r"}),
    ("negotiate-token68-then-basic", "Negotiate abc==, Basic realm=\"x\"", "basic",
     {"realm": "x"}),
    ("quoted-scheme-lookalike", 'Bearer realm="r, Basic realm=y",service="s"', "bearer",
     {"realm": "r, Basic realm=y", "service": "s"}),
    ("duplicate-param-first-wins", 'Bearer realm="r1",realm="r2"', "bearer", {"realm": "r1"}),
    ("unterminated-quote", 'Bearer realm="https://a/t', "bearer", {"realm": "https://a/t"}),
    ("only-unknown", 'Negotiate realm="x"', "negotiate", {"realm": "x"}),
]  # fmt: skip


class TestChallenges:
    """parse_challenges() and choose_challenge(): `WWW-Authenticate` into the challenge we use."""

    @pytest.mark.parametrize(
        ("header", "scheme", "params"),
        [case[1:] for case in CHALLENGES],
        ids=[case[0] for case in CHALLENGES],
    )
    def test_choose(self, header: str, scheme: str, params: dict[str, str]) -> None:
        """The scheme is lower-cased, parameters read quoted or not, Bearer preferred."""
        assert choose_challenge(header) == Challenge(scheme, params)

    def test_every_challenge_in_order(self) -> None:
        """All challenges of a header come back in order, a token68 value under ''."""
        header = 'Negotiate YWJj==, Bearer realm="r",service="s", Basic realm="b"'
        assert parse_challenges(header) == [
            Challenge("negotiate", {"": "YWJj=="}),
            Challenge("bearer", {"realm": "r", "service": "s"}),
            Challenge("basic", {"realm": "b"}),
        ]

    @given(st.text(max_size=200))
    def test_any_text_parses(self, header: str) -> None:
        """Any header text parses to challenges without raising (hostile registries)."""
        for challenge in parse_challenges(header):
            assert challenge.scheme == challenge.scheme.lower()

    @given(
        st.from_regex(r"[a-z][a-z0-9./:-]{0,30}", fullmatch=True),
        st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True),
    )
    def test_bearer_survives_a_following_basic(self, realm: str, service: str) -> None:
        """Whatever the realm and service, a Basic challenge after them never replaces them."""
        header = f'Bearer realm="{realm}",service="{service}", Basic realm="other"'
        assert choose_challenge(header) == Challenge("bearer", {"realm": realm, "service": service})


class TestCredentials:
    """Credentials never show the password."""

    def test_repr_hides_secrets(self) -> None:
        """repr() and str() name the user but never the password or identity token."""
        creds = Credentials("alice", SECRET, identity_token="refresh-" + SECRET)
        assert "alice" in repr(creds)
        assert SECRET not in repr(creds)
        assert SECRET not in str(creds)

    def test_basic_header(self) -> None:
        """The Basic header is base64 of user:password."""
        assert Credentials("alice", "pw:x").basic_header() == "Basic " + _b64("alice:pw:x")

    def test_basic_header_of_identity_token(self) -> None:
        """Without a password, the identity token is the Basic password (the GET fallback)."""
        creds = Credentials("<token>", "", identity_token="rt")
        assert creds.basic_header() == "Basic " + _b64("<token>:rt")


def _unauthorized(header: str | None, *, sent: str | None = None) -> httpx.Response:
    headers = {"www-authenticate": header} if header else {}
    request_headers = {"Authorization": sent} if sent else {}
    request = httpx.Request("GET", f"https://{HOST}/v2/", headers=request_headers)
    return httpx.Response(401, headers=headers, request=request)


class _TokenService:
    """A token realm at the transport boundary: records requests, answers in turn (the last
    answer repeats)."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses[min(len(self.requests), len(self.responses)) - 1]


class _Rotating:
    """A CredentialProvider whose source changes: the next secret is given on refresh."""

    source = "rotating test credentials"

    def __init__(self, *secrets: Credentials) -> None:
        self.secrets = list(secrets)
        self.refreshes = 0

    async def get(self, *, refresh: bool = False) -> Credentials | None:
        if refresh:
            self.refreshes += 1
        return self.secrets[min(self.refreshes, len(self.secrets) - 1)]

    def cached(self) -> bool:
        return True


class _Failing:
    """A CredentialProvider whose source is broken (a credential helper missing)."""

    source = "docker-credential-broken"

    async def get(self, *, refresh: bool = False) -> Credentials | None:
        raise AuthError(
            "credential helper docker-credential-broken is not on PATH", temporary=False
        )

    def cached(self) -> bool:
        return False


def _authenticator(
    http: httpx.AsyncClient, credentials: CredentialProvider | None
) -> Authenticator:
    """An Authenticator for the registry at HOST, trusting REALM (on another host) by config;
    each token request tried once, as these tests are about what happens once the retry policy
    has given up (the policy itself: tests/integration/test_retry_policy.py)."""
    return Authenticator(
        http,
        credentials,
        registry=("https", HOST.split(":", maxsplit=1)[0], 5000),
        token_realms=(REALM,),
        retry=RetryPolicy(attempts=1),
    )


def _static(user: str = "alice", password: str = SECRET) -> StaticCredentials:
    return StaticCredentials(Credentials(user, password))


def _form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode())


class TestAuthenticator:
    """Authenticator: Basic and Bearer challenges answered, tokens cached per scope."""

    async def test_basic_challenge(self) -> None:
        """A Basic challenge is answered with the credentials, then sent proactively."""
        async with httpx.AsyncClient() as http:
            auth = _authenticator(http, _static())
            header = await auth.answer(_unauthorized('Basic realm="r"'), "repository:a:pull")
            assert header == Credentials("alice", SECRET).basic_header()
            assert await auth.authorization("repository:b:push") == header

    async def test_nothing_sent_before_a_challenge(self) -> None:
        """Before the registry asked, no Authorization is sent and the provider is not asked."""
        async with httpx.AsyncClient() as http:
            auth = _authenticator(http, _Failing())
            assert await auth.authorization("repository:a:pull") is None
            assert auth.problem is None

    async def test_basic_without_credentials(self) -> None:
        """A Basic challenge with no credentials configured raises AuthError."""
        async with httpx.AsyncClient() as http:
            with pytest.raises(AuthError, match="none are configured"):
                await _authenticator(http, None).answer(_unauthorized("Basic"), "s")

    async def test_basic_with_a_failing_provider(self) -> None:
        """A Basic challenge when the provider fails raises the provider's error."""
        async with httpx.AsyncClient() as http:
            with pytest.raises(AuthError, match="docker-credential-broken is not on PATH"):
                await _authenticator(http, _Failing()).answer(_unauthorized("Basic"), "s")

    async def test_basic_refused_when_the_request_carried_the_credentials(self) -> None:
        """A 401 to a request that already carried our Basic credentials means refused."""
        async with httpx.AsyncClient() as http:
            auth = _authenticator(http, _static("a", "b"))
            sent = await auth.answer(_unauthorized("Basic"), "s")
            with pytest.raises(AuthError, match="refused"):
                await auth.answer(_unauthorized("Basic", sent=sent), "s")

    async def test_basic_refused_then_fresh_credentials(self) -> None:
        """Refused Basic credentials are asked for again once; new ones are used."""
        old, new = Credentials("a", "old"), Credentials("a", "new")
        async with httpx.AsyncClient() as http:
            auth = _authenticator(http, _Rotating(old, new))
            sent = await auth.answer(_unauthorized("Basic"), "s")
            assert await auth.answer(_unauthorized("Basic", sent=sent), "s") == new.basic_header()

    async def test_concurrent_anonymous_401s_all_get_the_credentials(self) -> None:
        """Several first requests sent anonymously at once each get the Basic header back."""
        async with httpx.AsyncClient() as http:
            auth = _authenticator(http, _static("a", "b"))
            first = await auth.answer(_unauthorized("Basic"), "s")
            second = await auth.answer(_unauthorized("Basic"), "s")
            assert first == second == Credentials("a", "b").basic_header()

    @pytest.mark.parametrize(
        "header", [None, 'Negotiate realm="x"'], ids=["no-challenge", "unsupported-scheme"]
    )
    async def test_unsupported_challenge(self, header: str | None) -> None:
        """A 401 without a Basic or Bearer challenge raises AuthError."""
        async with httpx.AsyncClient() as http:
            with pytest.raises(AuthError, match="unsupported challenge"):
                await _authenticator(http, None).answer(_unauthorized(header), "s")

    async def test_bearer_token_fetched_and_cached(self) -> None:
        """A Bearer challenge fetches a token per scope with Basic credentials and caches it."""
        service = _TokenService(httpx.Response(200, json={"token": "tok", "expires_in": 300}))
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, _static())
            challenge = f'Bearer realm="{REALM}",service="reg", Basic realm="x"'
            scope = "repository:a:pull repository:b:pull,push"
            assert await auth.answer(_unauthorized(challenge), scope) == "Bearer tok"
            assert auth.uses_bearer
            assert await auth.authorization(scope) == "Bearer tok"
            assert len(service.requests) == 1
            await auth.authorization("repository:other:pull")
            assert len(service.requests) == 2
        request = service.requests[0]
        assert request.method == "GET"
        assert request.url.params.get_list("scope") == scope.split()
        assert request.url.params["service"] == "reg"
        assert request.headers["authorization"] == Credentials("alice", SECRET).basic_header()

    async def test_anonymous_token_request(self) -> None:
        """Without credentials the token is requested without an Authorization header."""
        service = _TokenService(httpx.Response(200, json={"access_token": "anon"}))
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, None)
            header = await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s")
        assert header == "Bearer anon"
        assert "authorization" not in service.requests[0].headers

    async def test_failing_provider_still_gets_an_anonymous_token(self) -> None:
        """A broken credential source does not block a public image: the token is anonymous."""
        service = _TokenService(httpx.Response(200, json={"token": "anon"}))
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, _Failing())
            header = await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s")
        assert header == "Bearer anon"
        assert "authorization" not in service.requests[0].headers
        assert auth.problem is not None

    async def test_failing_provider_named_when_anonymous_is_refused(self) -> None:
        """When anonymous is not enough, the error names why there were no credentials."""
        service = _TokenService(httpx.Response(401))
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, _Failing())
            with pytest.raises(AuthError, match=r"refused.*broken is not on PATH"):
                await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s")

    async def test_refused_credentials_refreshed_once(self) -> None:
        """A token service refusing the credentials gets the provider's fresh ones, once."""
        service = _TokenService(httpx.Response(401), httpx.Response(200, json={"token": "t2"}))
        provider = _Rotating(Credentials("a", "old"), Credentials("a", "new"))
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, provider)
            assert await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s") == "Bearer t2"
        assert (
            service.requests[1].headers["authorization"] == Credentials("a", "new").basic_header()
        )
        assert provider.refreshes == 1

    async def test_identity_token_uses_the_oauth2_post_grant(self) -> None:
        """An identity token is sent as an OAuth2 refresh-token grant, never as a password."""
        service = _TokenService(httpx.Response(200, json={"access_token": "at", "expires_in": 60}))
        creds = Credentials("00000000-0000-0000-0000-000000000000", "", identity_token="rt-1")
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, StaticCredentials(creds))
            challenge = f'Bearer realm="{REALM}",service="reg"'
            scope = "repository:a:pull repository:b:pull,push"
            assert await auth.answer(_unauthorized(challenge), scope) == "Bearer at"
        (request,) = service.requests
        assert request.method == "POST"
        assert "authorization" not in request.headers
        assert _form(request) == {
            "grant_type": ["refresh_token"], "refresh_token": ["rt-1"], "service": ["reg"],
            "scope": [scope], "client_id": ["replicator"],
        }  # fmt: skip

    async def test_rotated_refresh_token_is_used_next(self) -> None:
        """A refresh token returned by the grant replaces the configured one afterwards."""
        service = _TokenService(
            httpx.Response(200, json={"access_token": "a1", "refresh_token": "rt-2"}),
            httpx.Response(200, json={"access_token": "a2"}),
        )
        creds = Credentials("<token>", "", identity_token="rt-1")
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, StaticCredentials(creds))
            await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s1")
            assert await auth.authorization("s2") == "Bearer a2"
        assert _form(service.requests[1])["refresh_token"] == ["rt-2"]

    @pytest.mark.parametrize("status", [404, 405])
    async def test_identity_token_falls_back_to_get(self, status: int) -> None:
        """A token service without the POST endpoint is asked by GET, the token as password."""
        service = _TokenService(httpx.Response(status), httpx.Response(200, json={"token": "g"}))
        creds = Credentials("user", "", identity_token="rt-1")
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, StaticCredentials(creds))
            assert await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s") == "Bearer g"
        post, get = service.requests
        assert (post.method, get.method) == ("POST", "GET")
        assert get.headers["authorization"] == "Basic " + _b64("user:rt-1")

    @pytest.mark.parametrize(
        "refusal",
        [httpx.Response(404), httpx.Response(400, json={"error": "unsupported_grant_type"})],
        ids=["no-endpoint", "unsupported-grant"],
    )
    async def test_missing_refresh_grant_is_remembered(self, refusal: httpx.Response) -> None:
        """A realm without the refresh-token grant is asked by POST once: the next scope's
        token is asked by GET straight away."""
        service = _TokenService(
            refusal,
            httpx.Response(200, json={"token": "g1"}),
            httpx.Response(200, json={"token": "g2"}),
        )
        creds = Credentials("user", "", identity_token="rt-1")
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, StaticCredentials(creds))
            await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s1")
            assert await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s2") == "Bearer g2"
        assert [r.method for r in service.requests] == ["POST", "GET", "GET"]

    async def test_invalid_grant_is_not_taken_for_a_missing_grant(self) -> None:
        """400 invalid_grant (a bad refresh token) fails the token request: it is no sign that
        the grant is missing, and no password flow is tried behind it."""
        service = _TokenService(httpx.Response(400, json={"error": "invalid_grant"}))
        creds = Credentials("user", "", identity_token="rt-1")
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, StaticCredentials(creds))
            with pytest.raises(AuthError):
                await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s1")
        assert [r.method for r in service.requests] == ["POST"]

    async def test_replaced_credentials_drop_tokens(self) -> None:
        """After replace_credentials, cached tokens are not reused: new credentials apply."""
        service = _TokenService(
            httpx.Response(200, json={"token": "t1", "expires_in": 300}),
            httpx.Response(200, json={"token": "t2", "expires_in": 300}),
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, _static("a", "old"))
            await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s")
            auth.replace_credentials(_static("a", "new"))
            assert await auth.authorization("s") == "Bearer t2"
        assert (
            service.requests[1].headers["authorization"] == Credentials("a", "new").basic_header()
        )

    async def test_failed_realm_remembered_per_scope(self) -> None:
        """A realm that failed a scope is not asked again for it during the backoff (the
        error is raised from memory), but is asked at once for another scope."""
        service = _TokenService(
            httpx.Response(503), httpx.Response(200, json={"token": "t", "expires_in": 300})
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, _static())
            challenge = _unauthorized(f'Bearer realm="{REALM}"')
            with pytest.raises(AuthError, match="answered 503"):
                await auth.answer(challenge, "repository:a:pull")
            with pytest.raises(AuthError, match=r"1 time.*answered 503") as remembered:
                await auth.answer(challenge, "repository:a:pull")
            assert remembered.value.temporary
            assert len(service.requests) == 1
            assert await auth.answer(challenge, "repository:b:pull") == "Bearer t"
        assert len(service.requests) == 2

    async def test_failing_hint_goes_anonymous(self) -> None:
        """The realm that gave another scope its token is only a hint: when it fails for a new
        scope, the request goes without a token, so the registry says what that scope needs."""
        service = _TokenService(
            httpx.Response(200, json={"token": "t", "expires_in": 300}), httpx.Response(503)
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, _static())
            await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "repository:a:pull")
            assert await auth.authorization("repository:b:pull") is None
            assert await auth.authorization("repository:b:pull") is None
            assert await auth.authorization("repository:a:pull") == "Bearer t"
        assert len(service.requests) == 2, "the failed hint is not asked again at once"

    async def test_own_realm_failing_raises(self) -> None:
        """A scope whose own 401 named a realm that fails now raises the realm's error (a
        request that cannot be replayed needs its token before it is sent)."""
        service = _TokenService(
            httpx.Response(200, json={"token": "t", "expires_in": 300}), httpx.Response(503)
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, _static())
            await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s")
            auth.replace_credentials(_static("alice", "rotated"))  # the token is dropped
            with pytest.raises(AuthError, match="answered 503"):
                await auth.authorization("s")

    async def test_realm_query_kept(self) -> None:
        """A realm's own query string is sent with service and scope."""
        service = _TokenService(httpx.Response(200, json={"token": "t"}))
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, None)
            challenge = f'Bearer realm="{REALM}?mode=x&scope=ignored",service="reg"'
            await auth.answer(_unauthorized(challenge), "repository:a:pull")
        params = service.requests[0].url.params
        assert params["mode"] == "x"
        assert params.get_list("scope") == ["repository:a:pull"]
        assert params["service"] == "reg"

    @pytest.mark.parametrize(
        ("response", "message", "temporary"),
        [
            (httpx.Response(401), "refused the credentials", False),
            (httpx.Response(403), "refused the credentials", False),
            (httpx.Response(400), "answered 400", False),
            (httpx.Response(503), "answered 503", True),
            (httpx.Response(429), "answered 429", True),
            (httpx.Response(200, content=b"<html>"), "not a token", True),
            (httpx.Response(200, json=["token"]), "not a token", True),
            (httpx.Response(200, json={"token": ""}), "no token", True),
            (httpx.Response(200, json={"token": 5}), "no token", True),
            (httpx.Response(200, json={"token": "t", "expires_in": "soon"}), "not a token", True),
            (httpx.Response(200, content=b" " * (1024 * 1024 + 1)), "too large", True),
        ],
        ids=["401", "403", "400", "503", "429", "html", "array", "empty-token",
             "number-token", "bad-expiry", "too-large"],
    )  # fmt: skip
    async def test_token_service_failures(
        self, response: httpx.Response, message: str, temporary: bool
    ) -> None:
        """A token service failure is an AuthError, temporary for 429, 5xx and an answer that
        is not a token (a broken token service, for now); a refusal or a 400 is permanent."""
        service = _TokenService(response)
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, _static())
            with pytest.raises(AuthError, match=message) as info:
                await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s")
        assert info.value.temporary is temporary
        assert SECRET not in str(info.value)

    @pytest.mark.parametrize("expires_in", ["NaN", "Infinity", -5, 1e12], ids=str)
    async def test_odd_lifetimes_are_bounded(self, expires_in: object) -> None:
        """A NaN, infinite, negative or huge expires_in never pins a token for long."""
        service = _TokenService(httpx.Response(200, json={"token": "t", "expires_in": expires_in}))
        async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as http:
            auth = _authenticator(http, None)
            await auth.answer(_unauthorized(f'Bearer realm="{REALM}"'), "s")
            _, until = auth._tokens["s"]
        assert until - time.monotonic() <= 24 * 3600

    async def test_bearer_without_realm(self) -> None:
        """A Bearer challenge that names no realm raises AuthError."""
        async with httpx.AsyncClient() as http:
            with pytest.raises(AuthError, match="no realm"):
                await _authenticator(http, None).answer(_unauthorized('Bearer service="s"'), "s")
