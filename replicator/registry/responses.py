"""Registry answers are read here (never past a cap) and become typed errors here, only here."""

from __future__ import annotations

import json

import httpx

from replicator.errors import AuthError, NotFoundError, RegistryError
from replicator.registry.retry import parse_retry_after

# Error bodies are a few hundred bytes of JSON; read at most this much of them so a registry (or
# a proxy's HTML page) cannot make us buffer megabytes just to build an error message.
MAX_ERROR_BODY = 16 * 1024
# What a request() reads of a successful answer unless its caller says more: answers that are
# not documents (HEAD, PUT, POST of an upload) carry a few hundred bytes; tag lists, catalog
# pages and referrers name their own caps. Nothing a registry sends is read past a cap.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
# OCI error codes that mean "does not exist" whatever the status code says.
_NOT_FOUND_CODES = frozenset({"BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN"})


def _error_codes(body: bytes) -> tuple[tuple[str, ...], str]:
    """The OCI error codes and the first message of a JSON error body, if it is one."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested deeper than the stack
        return (), ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return (), ""
    codes = tuple(str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code"))
    messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
    return codes, messages[0] if messages else ""


def describe(method: str, url: httpx.URL) -> str:
    """`METHOD host/path` without query string: upload URLs carry state tokens, never log them."""
    return f"{method} {url.host}{':' + str(url.port) if url.port else ''}{url.path}"


def error_for(response: httpx.Response, body: bytes) -> RegistryError:
    """The typed error for a failed registry response (body already read, capped)."""
    status = response.status_code
    codes, message = _error_codes(body[:MAX_ERROR_BODY])
    where = describe(response.request.method, response.request.url)
    detail = f"{status} {','.join(codes) or response.reason_phrase}"
    if message:
        detail += f": {message[:200]}"
    text = f"{where}: {detail}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 404 or (status < 500 and _NOT_FOUND_CODES.intersection(codes)):
        return NotFoundError(text, status=status, error_codes=codes)
    if status in (401, 403):
        return AuthError(text, status=status, error_codes=codes)
    # Quirk of distribution's filesystem driver: a blob's link file in a repository is
    # rewritten in place when the blob is linked again (a mount or upload by another client),
    # and a manifest PUT that verifies it during that instant is refused MANIFEST_BLOB_UNKNOWN.
    # Retried, the PUT succeeds; a blob really missing fails again and ends the job.
    temporary = (
        True if response.request.method == "PUT" and "MANIFEST_BLOB_UNKNOWN" in codes else None
    )
    return RegistryError(
        text, status=status, error_codes=codes, retry_after=retry_after, temporary=temporary
    )


async def raise_for_status(response: httpx.Response, expected: tuple[int, ...]) -> None:
    """Raise the typed error unless the status is one of `expected`; reads a capped error body."""
    if response.status_code in expected:
        return
    body = bytearray()
    if response.is_stream_consumed or _is_read(response):
        body.extend(response.content[:MAX_ERROR_BODY])
    else:
        async for chunk in response.aiter_raw():
            body.extend(chunk)
            if len(body) >= MAX_ERROR_BODY:
                break
        await response.aclose()
    raise error_for(response, bytes(body))


def _is_read(response: httpx.Response) -> bool:
    """Whether the response's body has been read into memory (httpx's public contract: reading
    `content` before that raises ResponseNotRead)."""
    try:
        _ = response.content
    except httpx.ResponseNotRead:
        return False
    return True


async def read_capped(response: httpx.Response, max_bytes: int) -> httpx.Response:
    """The response with its body read: at most `max_bytes` of a success (more is refused, not
    temporary: a registry answering this much is misbehaving, not slow), the first
    MAX_ERROR_BODY bytes of a failure (enough to build its error, the rest is dropped).

    The raw bytes are read (we ask for no content coding, and decoding one a server sends
    anyway could inflate past the cap) and kept as the response's content, as aread() keeps
    them: building a new httpx.Response cost ~20 us per request."""
    failed = response.status_code >= 400
    limit = MAX_ERROR_BODY if failed else max_bytes
    declared = response.headers.get("content-length", "")
    chunks: list[bytes] = []
    seen = 0
    # A HEAD answer's Content-Length is the size of what a GET would send: there is no body.
    head = response.request.method == "HEAD"
    over = not head and declared.isdigit() and int(declared) > limit
    if not over:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            seen += len(chunk)
            if seen > limit:
                over = True
                break
    await response.aclose()
    if over and not failed:
        raise RegistryError(
            f"{describe(response.request.method, response.request.url)}: the answer is larger "
            f"than {limit} bytes",
            status=response.status_code,
            temporary=False,
        )
    content = b"".join(chunks)  # one chunk (the usual case) is not copied
    # The one private attribute of httpx we use, and why pyproject.toml bounds httpx <1:
    # `Response._content` is where httpx keeps a read body (`content`, `text`, `json()` and
    # `aread()` return it, ResponseNotRead while it is absent). Setting it is what `aread()`
    # itself does; the public way, a new httpx.Response per request, cost ~20 us each.
    # tests/unit/test_responses_contract.py fails if a release changes this contract.
    response._content = content[:limit] if seen > limit else content
    return response
