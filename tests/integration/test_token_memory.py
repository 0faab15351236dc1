"""What an Authenticator keeps of a token service's answers stays bounded: a daemon runs for
months, fetching a token a scope every few minutes, over as many scopes as repositories.

- A token service that rotates refresh tokens: every refresh-grant answer carries a new one,
  and the one just used is refused from then on (RFC 6749 §6 and §10.4; Azure AD and Auth0 do
  this). The Authenticator must send the newest each time, and keep only that one.
- Tokens of ever-new scopes (a repository each): past the Authenticator's cap of remembered
  scopes, the oldest are forgotten (fetched again when needed).

The token service is tests/support/token_issuer.py over HTTP.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

import httpx
import pytest

from replicator.registry.auth import Authenticator
from replicator.registry.challenges import Challenge
from replicator.registry.credentials import Credentials, StaticCredentials
from tests.support.token_issuer import SERVICE, TokenIssuer

pytestmark = pytest.mark.integration

USER, PASSWORD = "ci", "s3cret-pw"
SCOPE = "repository:team/app:pull"
# Scopes an Authenticator of the many-scopes test remembers (the shipped cap is 10,000: the
# test shows the bound at a size it can reach quickly).
SCOPE_CAP = 64
# Scopes asked before the first reading (past the cap) and between the two readings.
FIRST_SCOPES, MORE_SCOPES = 2 * SCOPE_CAP, 3 * SCOPE_CAP
# Rounds before the first reading (every field set once) and between the two readings.
WARM_ROUNDS, MEASURED_ROUNDS = 20, 300
# What the Authenticator may hold more after MEASURED_ROUNDS more rotations: each token's size
# varies by a few bytes; keeping every rotated refresh token (a 35-character string and its
# slot, ~100 bytes) would add ~30 KB; keeping every scope's token (a JWT of ~700 bytes and its
# scope) would add ~150 KB over MORE_SCOPES.
GROWTH_LIMIT_BYTES = 2048
_CONTAINERS = (dict, list, set, frozenset, tuple, deque)


def _held(root: object, *, outside: tuple[object, ...]) -> int:
    """Bytes `root` holds: its own size, and what it reaches through containers and objects of
    replicator's classes (their fields), each object once; `outside` (shared clients, the
    credential provider) and anything else (event loops, locks' loops) counted shallow only."""
    seen = {id(thing) for thing in outside}
    stack: list[Any] = [root]
    total = 0
    while stack:
        thing = stack.pop()
        if id(thing) in seen:
            continue
        seen.add(id(thing))
        total += sys.getsizeof(thing)
        if isinstance(thing, dict):
            stack.extend(thing.keys())
            stack.extend(thing.values())
        elif isinstance(thing, _CONTAINERS):
            stack.extend(thing)
        elif type(thing).__module__.startswith("replicator."):
            stack.extend(vars(thing).values() if hasattr(thing, "__dict__") else ())
            for name in getattr(type(thing), "__slots__", ()):
                stack.append(getattr(thing, name, None))
    return total


async def test_rotated_refresh_tokens_are_used_and_not_accumulated(
    token_issuer: TokenIssuer,
) -> None:
    """Against a token service rotating refresh tokens on every grant, 320 token fetches all
    succeed (each sent the newest refresh token: an older one is refused), and what the
    Authenticator holds is the same size after 300 more rotations."""
    token_issuer.users[USER] = PASSWORD
    token_issuer.rotate_refresh = True
    identity = token_issuer.offline_token(USER, PASSWORD)
    credentials = StaticCredentials(Credentials(USER, "", identity_token=identity))
    challenge = Challenge("bearer", {"realm": token_issuer.realm, "service": SERVICE})
    async with httpx.AsyncClient() as http:
        auth = Authenticator(http, credentials, registry=("http", "127.0.0.1", 5000))
        for _ in range(WARM_ROUNDS):
            await auth.fetch_token(SCOPE, challenge)
        before = _held(auth, outside=(http, credentials))
        for _ in range(MEASURED_ROUNDS):
            await auth.fetch_token(SCOPE, challenge)
        after = _held(auth, outside=(http, credentials))
    grants = token_issuer.grants("refresh_token")
    print(f"{len(grants)} refresh grants; the Authenticator held {before} B, then {after} B")
    assert [r.status for r in grants] == [200] * (WARM_ROUNDS + MEASURED_ROUNDS)
    assert after - before < GROWTH_LIMIT_BYTES, (before, after)


async def test_tokens_of_ever_new_scopes_are_capped(token_issuer: TokenIssuer) -> None:
    """Tokens fetched for 192 scopes beyond the first 128 (one repository each): what the
    Authenticator holds is the same size, its cap of remembered scopes (64 here) reached; a
    scope forgotten is fetched again when asked."""
    token_issuer.users[USER] = PASSWORD
    credentials = StaticCredentials(Credentials(USER, PASSWORD))
    challenge = Challenge("bearer", {"realm": token_issuer.realm, "service": SERVICE})

    def scope(n: int) -> str:
        return f"repository:team/app-{n:05d}:pull"

    async with httpx.AsyncClient() as http:
        auth = Authenticator(
            http, credentials, registry=("http", "127.0.0.1", 5000), max_scopes=SCOPE_CAP
        )
        for n in range(FIRST_SCOPES):
            await auth.fetch_token(scope(n), challenge)
        before = _held(auth, outside=(http, credentials))
        for n in range(FIRST_SCOPES, FIRST_SCOPES + MORE_SCOPES):
            await auth.fetch_token(scope(n), challenge)
        after = _held(auth, outside=(http, credentials))
        print(f"{FIRST_SCOPES + MORE_SCOPES} scopes; held {before} B, then {after} B")
        assert after - before < GROWTH_LIMIT_BYTES, (before, after)
        asked = len(token_issuer.requests)
        assert (await auth.authorization(scope(0))) is not None
        assert len(token_issuer.requests) == asked + 1, "a forgotten scope's token is fetched again"


async def test_realms_without_the_refresh_grant_are_capped(token_issuer: TokenIssuer) -> None:
    """A registry naming an ever-new realm on its own host (the same token service under
    another query), each without the refresh-token grant (POST 404): every token is still
    fetched (by GET, the identity token as the password), and what the Authenticator remembers
    of realms without the grant is the same size after 192 more of them (its cap: 64 here)."""
    token_issuer.users[USER] = PASSWORD
    identity = token_issuer.offline_token(USER, PASSWORD)
    token_issuer.oauth = False
    credentials = StaticCredentials(Credentials(USER, "", identity_token=identity))

    def challenge(n: int) -> Challenge:
        return Challenge("bearer", {"realm": f"{token_issuer.realm}?n={n}", "service": SERVICE})

    async with httpx.AsyncClient() as http:
        auth = Authenticator(
            http, credentials, registry=("http", "127.0.0.1", 5000), max_scopes=SCOPE_CAP
        )
        for n in range(FIRST_SCOPES):
            await auth.fetch_token(SCOPE, challenge(n))
        before = _held(auth, outside=(http, credentials))
        for n in range(FIRST_SCOPES, FIRST_SCOPES + MORE_SCOPES):
            await auth.fetch_token(SCOPE, challenge(n))
        after = _held(auth, outside=(http, credentials))
    gets = [r for r in token_issuer.grants("get") if r.status == 200 and r.account == USER]
    print(f"{FIRST_SCOPES + MORE_SCOPES} realms; held {before} B, then {after} B")
    assert len(gets) == FIRST_SCOPES + MORE_SCOPES
    assert after - before < GROWTH_LIMIT_BYTES, (before, after)
