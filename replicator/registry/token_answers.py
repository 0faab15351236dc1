"""What a token service answers: the token, its lifetime and a rotated refresh token, read
from a Docker token answer or an OAuth2 one; what is not a token becomes an AuthError that
says whether it is worth asking again."""

from __future__ import annotations

import math

import httpx

from replicator.errors import AuthError

# Tokens without `expires_in` live 60 s per the token spec.
DEFAULT_TOKEN_LIFETIME = 60.0
# An `expires_in` beyond a day is not believed (a token service's bug must not pin a token).
MAX_TOKEN_LIFETIME = 24 * 3600.0
# Token responses are small JSON; refuse to read more (a misconfigured realm could stream anything).
MAX_TOKEN_RESPONSE = 1024 * 1024


def read_token(resp: httpx.Response) -> tuple[str, float, str | None]:
    """The token, its lifetime in seconds, and a rotated refresh token, from a token answer.

    A 200 that is not a token (an HTML page from a captive portal or a broken proxy, a body
    cut short) is temporary: the token service is misbehaving for now, not refusing us."""
    if resp.status_code in (401, 403):
        raise AuthError(
            f"token service refused the credentials ({resp.status_code})",
            status=resp.status_code,
            temporary=False,
        )
    if resp.status_code >= 400:
        raise AuthError(
            f"token service answered {resp.status_code}",
            status=resp.status_code,
            temporary=resp.status_code >= 500 or resp.status_code == 429,
        )
    try:
        body = resp.json()
        # The token spec names it `token`; OAuth2 answers `access_token`; some send both.
        token = body.get("token") or body.get("access_token")
        lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        rotated = body.get("refresh_token")
    except (ValueError, AttributeError, TypeError) as exc:
        raise AuthError(
            "token service answered something that is not a token",
            status=resp.status_code,
            temporary=True,
        ) from exc
    if not isinstance(token, str) or not token:
        raise AuthError("token service answered no token", status=resp.status_code, temporary=True)
    if not math.isfinite(lifetime) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return (
        token,
        min(lifetime, MAX_TOKEN_LIFETIME),
        rotated if isinstance(rotated, str) and rotated else None,
    )


# A token service without the OAuth2 POST endpoint answers these to a POST; docker falls back
# to the GET flow on 404, and routers that know the path but not the method answer 405.
NO_OAUTH_STATUSES = frozenset({404, 405})


def no_refresh_grant(resp: httpx.Response) -> bool:
    """Whether a POST grant_type=refresh_token was answered as by a token service that has no
    such grant: no POST endpoint (NO_OAUTH_STATUSES), or RFC 6749 §5.2's 400
    `unsupported_grant_type`. (`invalid_grant` is a bad refresh token, not this.)"""
    if resp.status_code in NO_OAUTH_STATUSES:
        return True
    if resp.status_code != 400:
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") == "unsupported_grant_type"
