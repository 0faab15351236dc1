"""A token service that rotates refresh tokens: every refresh-grant answer carries a new one,
and the one just used is refused from then on (RFC 6749 §6 and §10.4; Azure AD and Auth0 do
this). The Authenticator must send the newest each time, and what it keeps of them must not
grow with the number of rotations: a daemon runs for months, a token a scope every few minutes.

The token service is tests/support/token_issuer.py over HTTP; the Authenticator is asked for a
token of one scope again and again (as a 401 on an expired token does), so the only state that
could grow is the refresh tokens'.
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
# Rounds before the first reading (every field set once) and between the two readings.
WARM_ROUNDS, MEASURED_ROUNDS = 20, 300
# What the Authenticator may hold more after MEASURED_ROUNDS more rotations: each token's size
# varies by a few bytes; keeping every rotated refresh token (a 35-character string and its
# slot, ~100 bytes) would add ~30 KB.
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
