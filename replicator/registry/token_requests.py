"""What is sent to a token service: the OAuth2 refresh-token grant (POST, RFC 6749 §6) and the
Docker token spec's GET, and the one way either is sent, its answer read up to
MAX_TOKEN_RESPONSE bytes. What the answers mean is token_answers.py; when to ask, auth.py."""

from __future__ import annotations

import httpx

from replicator.errors import AuthError, TransportError
from replicator.registry.credentials import Credentials
from replicator.registry.token_answers import MAX_TOKEN_RESPONSE

# The OAuth2 client_id sent with the POST grant; token services log it, some require one.
OAUTH_CLIENT_ID = "replicator"


def refresh_grant(
    http: httpx.AsyncClient, realm: str, service: str, scope: str, refresh_token: str
) -> httpx.Request:
    """The OAuth2 refresh-token grant for `scope`, POSTed to `realm`."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "service": service,
        # OAuth2 scopes are space separated (RFC 6749 §3.3), as docker sends them.
        "scope": scope,
        "client_id": OAUTH_CLIENT_ID,
    }
    return http.build_request("POST", realm, data=form)


def token_get(
    http: httpx.AsyncClient, realm: str, service: str, scope: str, credentials: Credentials | None
) -> httpx.Request:
    """The token spec's GET of `realm` for `scope`, with Basic `credentials` when given."""
    # Several scopes (a mount needs push on one repository and pull on another) are sent as
    # repeated `scope` parameters, as the Docker client does. The realm's own query
    # (`/token?mode=x`) is kept: httpx replaces a URL's query with `params` otherwise.
    params: list[tuple[str, str | int | float | bool | None]] = [("service", service)]
    params.extend(("scope", part) for part in scope.split())
    url = httpx.URL(realm)
    url = url.copy_with(params=url.params.merge(params))
    headers = {"Authorization": credentials.basic_header()} if credentials else {}
    return http.build_request("GET", url, headers=headers)


async def send(http: httpx.AsyncClient, realm: str, request: httpx.Request) -> httpx.Response:
    """Send a token request; the answer is read up to MAX_TOKEN_RESPONSE bytes, no more."""
    try:
        resp = await http.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_TOKEN_RESPONSE:
                    raise AuthError(
                        "token response is too large", status=resp.status_code, temporary=True
                    )
        finally:
            await resp.aclose()
    except httpx.HTTPError as exc:
        raise TransportError(
            f"token service {httpx.URL(realm).host}: {type(exc).__name__}"
        ) from exc
    return httpx.Response(
        resp.status_code, headers=resp.headers, content=bytes(body), request=request
    )
