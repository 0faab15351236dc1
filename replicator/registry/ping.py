"""Which scheme an insecure registry speaks: HTTPS when it answers over TLS, else plain HTTP.

This is containers/image's rule for a registry marked insecure (skopeo's `--src-tls-verify=
false`, Docker's `insecure-registries`): try HTTPS without checking the certificate, and fall
back to plain HTTP when no TLS answer comes. Registries on loopback need none of this: they
are reached over plain HTTP by default, as Docker does.
"""

from __future__ import annotations

import httpx

from replicator.logs import get_logger
from replicator.registry.connections import USER_AGENT, new_transport
from replicator.registry.pool import proxy_settings

log = get_logger(__name__)

# The probe only needs the TLS handshake and a response head; a registry that takes longer
# than this to answer /v2/ over HTTPS is taken to have none.
PING_TIMEOUT_SECONDS = 10.0
_TIMEOUTS = httpx.Timeout(PING_TIMEOUT_SECONDS).as_dict()


async def insecure_scheme(host: str, *, proxy: str | None = None) -> str:
    """HTTPS when `host` answers GET /v2/ over TLS (any status, certificate unchecked), else
    plain HTTP; through the proxy the environment (or `proxy`) names for it."""
    transport = new_transport(verify=False, max_connections=1, proxies=proxy_settings(proxy))
    request = httpx.Request(
        "GET",
        f"https://{host}/v2/",
        headers={"User-Agent": USER_AGENT},
        extensions={"timeout": _TIMEOUTS},
    )
    try:
        response = await transport.handle_async_request(request)
        await response.aclose()
    except httpx.HTTPError as exc:
        log.info("insecure_registry_plain_http", host=host, https_error=type(exc).__name__)
        return "http"
    finally:
        await transport.aclose()
    return "https"
