"""Registry authentication: anonymous, Basic, and the Bearer token challenge with a token cache.

The flow (distribution's token spec): a request answered 401 carries `WWW-Authenticate`. `Basic`
means send the credentials on every request. `Bearer realm=..,service=..,scope=..` means fetch a
token from the realm for that scope and retry once: by GET with Basic credentials (or none), or,
with an identity token, by the OAuth2 refresh-token grant POSTed to the realm (falling back to
GET where the token service has no OAuth2 endpoint, as docker does). Tokens are cached per scope
until shortly before they expire; a 401 with a cached token fetches a new one.

One token request per (realm, scope) is in flight at a time; every request that needs that token
meanwhile waits for its answer (single-flight).

Challenges are kept per scope, as hints: the one a scope's own 401 named, else the last one whose
realm gave a token (so a new repository gets its token before its first request). A realm that
fails a scope (unreachable, refusing, answering something that is not a token) is not asked again
for that scope until a backoff is over (domain/auth/failures.py); a hint that fails is dropped and
the registry asked anonymously, so its next 401 says what it wants now. One repository's dead or
lying realm never decides another repository's requests.

Credentials come from a `CredentialProvider` (registry/credentials.py), asked only once the
registry has demanded authentication. A provider that fails (a credential helper missing) does
not stop a Bearer flow: the token is asked for anonymously, and the provider's failure is named
only if the registry then refuses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import TypeVar

import httpx

from replicator.domain.auth.failures import AuthFailures, Failure
from replicator.domain.auth.realms import (
    Origin,
    anonymous_realm_problem,
    authority,
    origin_of,
    realm_problem,
)
from replicator.errors import AuthError, TransportError
from replicator.logs import get_logger
from replicator.registry import auth_refusals as refusals
from replicator.registry import token_requests
from replicator.registry.challenges import Challenge, choose_challenge
from replicator.registry.credentials import CredentialProvider, Credentials
from replicator.registry.retry import RetryPolicy, under_policy
from replicator.registry.single_flight import SingleFlight
from replicator.registry.token_answers import no_refresh_grant, read_token
from replicator.registry.wait_scope import waiting

log = get_logger(__name__)
K = TypeVar("K")
V = TypeVar("V")

# Refresh a token a little before it expires.
TOKEN_EXPIRY_MARGIN = 10.0
# Scopes whose own challenge and token are remembered (one per repository and action set), and
# realms remembered as having no refresh-token grant: a token is ~1 KB, so ~10 MB at the cap.
# The oldest is forgotten first; a forgotten challenge is learnt again from the registry's next
# 401, a forgotten token fetched again, a forgotten realm asked by POST once more.
MAX_SCOPES = 10_000


class Authenticator:
    """Answers auth challenges for one registry and caches the tokens it obtains."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: CredentialProvider | None,
        *,
        registry: Origin,
        token_realms: Collection[str] = (),
        retry: RetryPolicy | None = None,
        max_scopes: int = MAX_SCOPES,
    ) -> None:
        self._http = http
        self._max_scopes = max_scopes
        self._retry = retry or RetryPolicy()
        # Where the registry is, and the realms the config trusts besides its own host's
        # (domain/auth/realms.py decides where credentials may go).
        self._registry = registry
        self._token_realms = tuple(token_realms)
        self._provider = credentials
        self._basic = False
        # The last Bearer challenge whose realm gave a token: the hint for a scope not yet seen.
        self._bearer: Challenge | None = None
        # The Bearer challenge each scope's own 401 named.
        self._challenges: dict[str, Challenge] = {}
        self._failures = AuthFailures()
        self._tokens: dict[str, tuple[str, float]] = {}
        # A refresh token the token service rotated (OAuth2 answers may carry a new one).
        self._refresh_tokens: dict[str, str] = {}
        # Realms that answered a refresh-token grant as having none: asked by GET from then on,
        # not by a POST before every token request (a registry names its realms: as many kept
        # as scopes, the oldest forgotten first).
        self._no_refresh_grant: dict[str, None] = {}
        self.problem: AuthError | None = None  # why the provider could not give credentials
        # A token realm on another host that was asked without the credentials (they exist):
        # a refusal then says how to send them (`withheld_refusal`).
        self.withheld_from: str | None = None
        self._refreshing = asyncio.Lock()
        # Token requests in flight, by (realm, scope): every other request of that scope waits
        # for the one answer (single-flight) instead of asking the token service too.
        self._fetching: SingleFlight[tuple[str, str], str] = SingleFlight()

    @property
    def provider(self) -> CredentialProvider | None:
        """Where this registry's credentials come from."""
        return self._provider

    def replace_credentials(self, provider: CredentialProvider | None) -> None:
        """Use another credential source (a reload changed it); tokens obtained with the old
        credentials are dropped so the new ones take effect at the next request."""
        self._provider = provider
        self._tokens.clear()
        self._refresh_tokens.clear()
        self._failures.clear()
        self.problem = None

    @property
    def uses_bearer(self) -> bool:
        """Whether a Bearer realm of this registry has given a token (so a new scope gets its
        token before its first request)."""
        return self._bearer is not None

    async def _credentials(self, *, refresh: bool = False) -> Credentials | None:
        """The provider's credentials. Asking its source (a credential helper, for up to
        HELPER_TIMEOUT_SECONDS; ECR's token service) is a wait like a token fetch: the job's
        slot is given back meanwhile (registry/wait_scope.py). The wait is entered before the
        provider's lock, never inside it: a task taking its slot again while holding that lock
        could wait for a job that holds the slot and waits for the lock."""
        if self._provider is None:
            return None
        if refresh or not self._provider.cached():
            async with waiting():
                return await self._ask(self._provider, refresh=refresh)
        return await self._ask(self._provider, refresh=refresh)

    async def _ask(self, provider: CredentialProvider, *, refresh: bool) -> Credentials | None:
        try:
            credentials = await provider.get(refresh=refresh)
        except AuthError as exc:
            self.problem = exc
            raise
        self.problem = None
        return credentials

    async def _fresh_credentials(self, refused: Credentials) -> Credentials | None:
        """Credentials other than `refused`: the source asked again, once for all the
        concurrent requests that were refused with the same credentials. A wait, entered
        before the refresh lock for the reason `_credentials` gives."""
        async with waiting(), self._refreshing:
            current = await self._credentials()
            if current != refused:
                return current  # another request refreshed them meanwhile
            return await self._credentials(refresh=True)

    async def authorization(self, scope: str) -> str | None:
        """The `Authorization` value to send proactively for `scope`, if the registry has
        asked for one: Basic credentials, a cached token, or a token fetched now.

        The token is fetched from the realm the scope's own 401 named, else from the last
        realm that gave one (a hint). A realm that failed the scope is not asked during its
        backoff; the scope's challenge or the hint is then dropped and the request goes
        anonymous, so the registry's 401 names the realm it wants now. A scope's own realm
        failing now raises (a request that cannot be replayed needs its token first)."""
        if self._basic:
            credentials = await self._credentials()
            return credentials.basic_header() if credentials else None
        cached = self._tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        own = self._challenges.get(scope)
        challenge = own or self._bearer
        if challenge is None:
            return None
        if self._failures.blocked(_realm(challenge), scope, time.monotonic()) is not None:
            self._challenges.pop(scope, None)
            return None
        try:
            return f"Bearer {await self.fetch_token(scope, challenge)}"
        except (AuthError, TransportError):
            self._challenges.pop(scope, None)
            if own is not None:
                raise
            return None  # the hint's realm is not this scope's: the registry will say which is

    async def answer(self, response: httpx.Response, scope: str) -> str:
        """Given a 401 response, obtain credentials for `scope` or raise AuthError."""
        challenge = choose_challenge(response.headers.get("www-authenticate", ""))
        if challenge.scheme == "basic":
            return await self._answer_basic(response)
        if challenge.scheme == "bearer":
            if challenge.params.get("realm"):
                self._trusted(_realm(challenge))  # raises for a realm not to be asked at all
            self._remember(scope, challenge)
            cached = self._tokens.get(scope)
            sent = response.request.headers.get("authorization")
            if cached and cached[1] > time.monotonic() and sent != f"Bearer {cached[0]}":
                # Obtained since this request left (it went anonymous, or with an older
                # token): not the token refused, so no second fetch for the same scope.
                return f"Bearer {cached[0]}"
            self._tokens.pop(scope, None)
            failure = self._failures.blocked(_realm(challenge), scope, time.monotonic())
            if failure is not None:
                raise _remembered(challenge, scope, failure)
            return f"Bearer {await self.fetch_token(scope, challenge)}"
        raise AuthError(
            f"registry answered 401 with an unsupported challenge {challenge.scheme!r}",
            status=401,
            temporary=False,
        )

    def _remember(self, scope: str, challenge: Challenge) -> None:
        _keep(self._challenges, scope, challenge, self._max_scopes)

    async def _answer_basic(self, response: httpx.Response) -> str:
        credentials = await self._credentials()
        if credentials is None:
            raise refusals.basic_without_credentials(authority(self._registry), self.problem)
        basic = credentials.basic_header()
        # Refused only if this very request carried them: concurrent first requests all go
        # out anonymous and all come back 401 before any of them has learnt the scheme.
        if response.request.headers.get("authorization") == basic:
            fresh = await self._fresh_credentials(credentials)
            if fresh is None or fresh == credentials:
                raise AuthError(
                    f"registry refused the {self._source()}", status=401, temporary=False
                )
            basic = fresh.basic_header()
        self._basic = True
        return basic

    def _trusted(self, realm: str) -> bool:
        """Whether `realm` may have the credentials (domain/auth/realms.py); False when it may only
        be asked anonymously; AuthError, before anything is sent, when not even that."""
        problem = realm_problem(realm, self._registry, self._token_realms)
        if problem is None:
            return True
        if anonymous_realm_problem(realm, self._registry) is not None:
            log.warning("token_realm_refused", host=self._registry[1], problem=problem)
            raise AuthError(problem, status=401, temporary=False)
        return False

    def _source(self) -> str:
        return self._provider.source if self._provider else "credentials"

    async def fetch_token(self, scope: str, challenge: Challenge) -> str:
        """Fetch (and cache) a Bearer token for `scope` from `challenge`'s realm; a failure is
        remembered for (realm, scope), a success makes the challenge the registry's hint.

        One request per (realm, scope) is in flight: concurrent callers (a copy's first
        requests all meet the 401 at once) wait for its answer, token or error. Waiting for it
        is a wait like a backoff: a job gives its destination slot back meanwhile (a slow token
        service must not hold a destination's slots; registry/wait_scope.py)."""
        async with waiting():
            return await self._fetching.run(
                (_realm(challenge), scope), lambda: self._fetch_token(scope, challenge)
            )

    async def _fetch_token(self, scope: str, challenge: Challenge) -> str:
        """The one token request of `fetch_token`, its failure remembered."""
        realm = _realm(challenge)
        try:
            # Tried again under the registry's policy before the failure is remembered.
            token = await under_policy(self._retry, lambda: self._token(scope, challenge))
        except (AuthError, TransportError) as exc:
            failure = self._failures.failed(
                realm, scope, reason=str(exc), temporary=exc.temporary, now=time.monotonic()
            )
            log.info(
                "token_fetch_failed",
                host=self._registry[1],
                realm=realm.split("?", 1)[0],
                scope=scope,
                in_a_row=failure.in_a_row,
                retry_in=round(failure.until - time.monotonic(), 1),
                error=str(exc),
            )
            raise
        self._failures.succeeded(realm, scope)
        self._bearer = challenge
        return token

    async def _token(self, scope: str, challenge: Challenge) -> str:
        """A new token for `scope` from `challenge`'s realm, cached.

        A token service that refuses the credentials gets fresh ones from the provider, once
        (a rotated password, a helper's new secret). Without credentials — none configured, or
        the provider failed — the token is asked for anonymously, as public images need."""
        realm = _realm(challenge)
        trusted = self._trusted(realm) if realm else True
        try:
            # Another host's realm (not named in token_realms) is asked anonymously.
            credentials = await self._credentials() if trusted else None
        except AuthError:
            credentials = None  # self.problem says why; anonymous may still be enough
        try:
            token, lifetime = await self._request_token(challenge, scope, credentials)
        except AuthError as exc:
            if exc.status not in (401, 403):
                raise
            if not trusted and self._provider is not None:
                raise self.withheld_refusal(exc, realm) from exc
            if credentials is None:
                if self.problem is not None:
                    raise AuthError(
                        f"{exc}; and no credentials: {self.problem}",
                        status=exc.status,
                        temporary=self.problem.temporary,
                    ) from exc
                raise
            fresh = await self._fresh_credentials(credentials)
            if fresh is None or fresh == credentials:
                raise refusals.wrong_credentials(
                    exc, authority(self._registry), self._source()
                ) from exc
            token, lifetime = await self._request_token(challenge, scope, fresh)
        self.withheld_from = None if trusted or self._provider is None else realm
        expires = time.monotonic() + max(1.0, lifetime - TOKEN_EXPIRY_MARGIN)
        _keep(self._tokens, scope, (token, expires), self._max_scopes)
        return token

    def refusal(self, refused: AuthError) -> AuthError:
        """The registry's refusal of a request, saying where the credentials came from (or that
        there were none) and where to give them."""
        source = self._source() if self._provider is not None else None
        return refusals.refused(refused, authority(self._registry), source)

    def withheld_refusal(self, refused: AuthError, realm: str) -> AuthError:
        """The error of a token refused to an anonymous request of another host's realm, when
        credentials exist: they were kept from it, and this says how to send them."""
        where = authority(origin_of(realm) or self._registry)
        return refusals.withheld(refused, authority(self._registry), where, self._source())

    async def _request_token(
        self, challenge: Challenge, scope: str, credentials: Credentials | None
    ) -> tuple[str, float]:
        """One token request: the OAuth2 POST grant with an identity token, else the GET."""
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthError("Bearer challenge names no realm", status=401, temporary=False)
        if not self._trusted(realm):
            credentials = None
        service = challenge.params.get("service", "")
        if (
            credentials is not None
            and credentials.identity_token
            and realm not in self._no_refresh_grant
        ):
            refresh_token = self._refresh_tokens.get(
                credentials.identity_token, credentials.identity_token
            )
            grant = token_requests.refresh_grant(self._http, realm, service, scope, refresh_token)
            resp = await token_requests.send(self._http, realm, grant)
            if not no_refresh_grant(resp):
                token, lifetime, rotated = read_token(resp)
                if rotated:
                    self._refresh_tokens[credentials.identity_token] = rotated
                return token, lifetime
            log.info("token_refresh_grant_unsupported", realm=realm, status=resp.status_code)
            _keep(self._no_refresh_grant, realm, None, self._max_scopes)
        get = token_requests.token_get(self._http, realm, service, scope, credentials)
        resp = await token_requests.send(self._http, realm, get)
        token, lifetime, _ = read_token(resp)
        return token, lifetime


def _keep(memory: dict[K, V], key: K, value: V, cap: int) -> None:
    """Remember key -> value as the newest entry of `memory`, forgetting the oldest past `cap`."""
    memory.pop(key, None)
    memory[key] = value
    while len(memory) > cap:
        del memory[next(iter(memory))]


def _realm(challenge: Challenge) -> str:
    return challenge.params.get("realm", "")


def _remembered(challenge: Challenge, scope: str, failure: Failure) -> AuthError:
    """The error a remembered failure of the challenge's realm raises, without asking it."""
    where = httpx.URL(_realm(challenge)).host or "the token service"
    return AuthError(
        f"token service {where} failed {failure.in_a_row} time(s) in a row for {scope}, "
        f"asked again after a backoff: {failure.reason}",
        status=401,
        temporary=failure.temporary,
    )
