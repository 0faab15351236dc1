"""Registry answers: typed errors (registry/responses.py) and the Link header (client.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.errors import AuthError, NotFoundError, RegistryError
from replicator.registry.client import link_next
from replicator.registry.links import next_link, parse_links
from replicator.registry.responses import MAX_ERROR_BODY, describe, error_for, raise_for_status

URL = "http://127.0.0.1:5000/v2/team/app/manifests/v1"
UPLOAD_URL = (
    "https://registry.example.com/v2/team/app/blobs/uploads/3f2a?_state=SECRETSTATE&digest=sha256:1"
)


def _body(*errors: dict[str, object]) -> bytes:
    return json.dumps({"errors": list(errors)}).encode()


def _response(
    status: int,
    body: bytes = b"",
    *,
    method: str = "GET",
    url: str = URL,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers, request=httpx.Request(method, url))


ERROR_CASES = [
    ("404-manifest-unknown", 404, _body({"code": "MANIFEST_UNKNOWN", "message": "unknown"}),
     NotFoundError, ("MANIFEST_UNKNOWN",), False),
    ("404-empty-body", 404, b"", NotFoundError, (), False),
    ("400-name-unknown", 400, _body({"code": "NAME_UNKNOWN"}), NotFoundError, ("NAME_UNKNOWN",),
     False),
    ("400-blob-unknown", 400, _body({"code": "BLOB_UNKNOWN"}), NotFoundError, ("BLOB_UNKNOWN",),
     False),
    ("401", 401, _body({"code": "UNAUTHORIZED", "message": "authentication required"}), AuthError,
     ("UNAUTHORIZED",), False),
    ("403-denied", 403, _body({"code": "DENIED"}), AuthError, ("DENIED",), False),
    ("400-manifest-invalid", 400, _body({"code": "MANIFEST_INVALID"}), RegistryError,
     ("MANIFEST_INVALID",), False),
    ("400-two-codes", 400, _body({"code": "MANIFEST_INVALID"}, {"code": "DIGEST_INVALID"}),
     RegistryError, ("MANIFEST_INVALID", "DIGEST_INVALID"), False),
    ("408", 408, b"", RegistryError, (), True),
    ("429-toomanyrequests", 429, _body({"code": "TOOMANYREQUESTS"}), RegistryError,
     ("TOOMANYREQUESTS",), True),
    ("500-html", 500, b"<html><body>Internal error</body></html>", RegistryError, (), True),
    ("503-unavailable", 503, _body({"code": "UNAVAILABLE"}), RegistryError, ("UNAVAILABLE",),
     True),
    ("503-blob-unknown-stays-temporary", 503, _body({"code": "BLOB_UNKNOWN"}), RegistryError,
     ("BLOB_UNKNOWN",), True),
    ("400-deeply-nested-json", 400, b"[" * 10_000, RegistryError, (), False),
    ("400-errors-not-list", 400, json.dumps({"errors": "x"}).encode(), RegistryError, (), False),
    ("400-error-entries-odd", 400, json.dumps({"errors": [1, None, {"code": ""}]}).encode(),
     RegistryError, (), False),
    ("400-not-utf8", 400, b"\xff\xfe\xfd", RegistryError, (), False),
]  # fmt: skip


class TestErrorFor:
    """error_for(): status and OCI error body into NotFoundError, AuthError or RegistryError."""

    @pytest.mark.parametrize(
        ("status", "body", "error_type", "codes", "temporary"),
        [case[1:] for case in ERROR_CASES],
        ids=[case[0] for case in ERROR_CASES],
    )
    def test_error_type(
        self,
        status: int,
        body: bytes,
        error_type: type[RegistryError],
        codes: tuple[str, ...],
        temporary: bool,
    ) -> None:
        """The error class, status, OCI codes and temporariness follow the response."""
        error = error_for(_response(status, body), body)
        assert type(error) is error_type
        assert error.status == status
        assert error.error_codes == codes
        assert error.temporary is temporary

    def test_message_names_request_status_and_registry_message(self) -> None:
        """The message gives method, host, path, status, codes and the registry's message."""
        body = _body({"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"})
        error = error_for(_response(404, body, method="HEAD"), body)
        assert str(error) == (
            "HEAD 127.0.0.1:5000/v2/team/app/manifests/v1: 404 MANIFEST_UNKNOWN: manifest unknown"
        )

    def test_message_without_codes_uses_reason(self) -> None:
        """Without OCI codes the HTTP reason phrase is given."""
        error = error_for(_response(502), b"")
        assert str(error).endswith(": 502 Bad Gateway")

    def test_query_string_never_in_message(self) -> None:
        """Upload URLs carry state tokens in the query; the message leaves the query out."""
        error = error_for(_response(400, method="PUT", url=UPLOAD_URL), b"")
        assert "_state" not in str(error)
        assert "SECRETSTATE" not in str(error)
        assert "registry.example.com/v2/team/app/blobs/uploads/3f2a" in str(error)

    def test_body_is_capped(self) -> None:
        """Only the first MAX_ERROR_BODY bytes are read: codes beyond them are not seen."""
        padding = "x" * MAX_ERROR_BODY
        body = json.dumps({"pad": padding, "errors": [{"code": "DENIED"}]}).encode()
        assert error_for(_response(400, body), body).error_codes == ()

    def test_long_registry_message_is_shortened(self) -> None:
        """The registry's message is cut to keep errors one readable line."""
        body = _body({"code": "DENIED", "message": "m" * 5000})
        error = error_for(_response(400, body), body)
        assert len(str(error)) < 400

    @pytest.mark.parametrize(
        ("header", "expected"),
        [("7", 7.0), ("Wed, 01 May 2024 12:00:00 GMT", 0.0), ("soon", None), (None, None)],
        ids=["seconds", "past-date", "garbage", "absent"],
    )
    def test_retry_after(self, header: str | None, expected: float | None) -> None:
        """Retry-After is read into the error, in seconds."""
        headers = {"retry-after": header} if header is not None else None
        error = error_for(_response(429, headers=headers), b"")
        assert error.retry_after == expected


class TestManifestBlobUnknownQuirk:
    """A manifest PUT refused MANIFEST_BLOB_UNKNOWN is retried (distribution's link-file race)."""

    @pytest.mark.parametrize(
        ("method", "temporary"), [("PUT", True), ("GET", False)], ids=["put", "other-method"]
    )
    def test_temporary_only_for_put(self, method: str, temporary: bool) -> None:
        """Only the PUT of a manifest naming a blob the registry briefly lost is temporary."""
        body = _body({"code": "DIGEST_INVALID"}, {"code": "MANIFEST_BLOB_UNKNOWN"})
        error = error_for(_response(400, body, method=method), body)
        assert error.temporary is temporary


class TestDescribe:
    """describe(): `METHOD host[:port]/path`, without query or credentials."""

    @pytest.mark.parametrize(
        ("method", "url", "expected"),
        [
            ("GET", "http://127.0.0.1:5000/v2/", "GET 127.0.0.1:5000/v2/"),
            ("PUT", UPLOAD_URL, "PUT registry.example.com/v2/team/app/blobs/uploads/3f2a"),
            ("HEAD", "https://r.io:443/v2/a/blobs/x", "HEAD r.io/v2/a/blobs/x"),
            ("GET", "https://user:pw@r.io/v2/", "GET r.io/v2/"),
        ],
        ids=["port", "query-dropped", "default-port", "userinfo-dropped"],
    )
    def test_describe(self, method: str, url: str, expected: str) -> None:
        """The description keeps method, host, port and path only."""
        assert describe(method, httpx.URL(url)) == expected


async def _endless(counter: list[int]) -> AsyncIterator[bytes]:
    while True:
        counter[0] += 1
        yield b"x" * 1024


class TestRaiseForStatus:
    """raise_for_status(): expected statuses pass, others raise with a capped body."""

    async def test_expected_status_passes(self) -> None:
        """A status in `expected` raises nothing."""
        await raise_for_status(_response(201), (201, 202))

    async def test_read_body(self) -> None:
        """An already-read body gives the error its OCI codes."""
        body = _body({"code": "BLOB_UNKNOWN"})
        with pytest.raises(NotFoundError) as info:
            await raise_for_status(_response(404, body), (200,))
        assert info.value.error_codes == ("BLOB_UNKNOWN",)

    async def test_streamed_body(self) -> None:
        """A streamed error body is read to build the error."""

        async def chunks() -> AsyncIterator[bytes]:
            body = _body({"code": "DENIED", "message": "no"})
            yield body[:5]
            yield body[5:]

        response = httpx.Response(403, content=chunks(), request=httpx.Request("GET", URL))
        with pytest.raises(AuthError) as info:
            await raise_for_status(response, (200,))
        assert info.value.error_codes == ("DENIED",)

    async def test_endless_streamed_body_is_capped(self) -> None:
        """An endless error body is read only up to the cap, and the response is closed."""
        counter = [0]
        response = httpx.Response(500, content=_endless(counter), request=httpx.Request("GET", URL))
        with pytest.raises(RegistryError):
            await raise_for_status(response, (200,))
        assert counter[0] == MAX_ERROR_BODY // 1024
        assert response.is_closed


LINKS = [
    ("distribution", '</v2/_catalog?last=b&n=100>; rel="next"', "/v2/_catalog?last=b&n=100"),
    ("no-space", '</v2/a/tags/list?n=2&last=v1>;rel="next"', "/v2/a/tags/list?n=2&last=v1"),
    ("unquoted", "</v2/_catalog?last=x>; rel=next", "/v2/_catalog?last=x"),
    (
        "absolute",
        '<https://r.io/v2/_catalog?last=x>; rel="next"',
        "https://r.io/v2/_catalog?last=x",
    ),
    ("uppercase", '</p2>; REL="NEXT"', "/p2"),
    ("several-relations", '</p2>; rel="next last"', "/p2"),
    ("other-params-first", '</p2>; type="application/json"; rel="next"', "/p2"),
    ("prev-then-next", '</p1>; rel="prev", </p3>; rel="next"', "/p3"),
    ("only-prev", '</p1>; rel="prev"', None),
    ("next-like-word", "</p2>; rel=nextpage", None),
    ("no-rel", "</p2>", None),
    ("empty", "", None),
    ("absent", None, None),
    ("comma-in-query", '</v2/_catalog?last=a,b&n=2>; rel="next"', "/v2/_catalog?last=a,b&n=2"),
    ("comma-and-semicolon-in-query", '</v2/t?x=a,b;c>; rel="next"', "/v2/t?x=a,b;c"),
    ("quoted-comma-param-first", '</p1>; title="a, b; c", </p2>; rel="next"', "/p2"),
    ("quoted-comma-before-rel", '</p2>; title="x, <y>"; rel="next"', "/p2"),
    ("escaped-quote-param", r'</p2>; title="a\"b"; rel="next"', "/p2"),
    ("first-rel-counts", '</p2>; rel="prev"; rel="next"', None),
    ("unterminated-target", '</p2; rel="next"', None),
    ("junk-then-link", 'garbage, </p2>; rel="next"', "/p2"),
]


class TestLinkNext:
    """link_next(): the next page from an RFC 8288 Link header."""

    @pytest.mark.parametrize(
        ("header", "expected"),
        [case[1:] for case in LINKS],
        ids=[case[0] for case in LINKS],
    )
    def test_link_next(self, header: str | None, expected: str | None) -> None:
        """The URL of the `next` relation is returned, or None when there is none."""
        headers = {"link": header} if header is not None else None
        assert link_next(_response(200, headers=headers)) == expected


class TestParseLinks:
    """parse_links(): any header text, never an exception."""

    @given(st.text(max_size=300))
    def test_any_text_parses(self, header: str) -> None:
        """Any Link header text parses: one link per `<...>`, none holding a `>`."""
        links = parse_links(header)
        assert len(links) <= header.count("<")
        assert all(">" not in link.target for link in links)

    @given(st.from_regex(r"/v2/[a-z]{1,8}\?last=[a-z,;]{1,12}&n=[0-9]{1,3}", fullmatch=True))
    def test_query_survives(self, url: str) -> None:
        """Commas and semicolons inside the URL never cut it."""
        assert next_link(f'<{url}>; rel="next"') == url
