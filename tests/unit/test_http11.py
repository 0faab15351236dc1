"""http11: request heads, response heads and body framing, as RFC 9112 has them."""

from __future__ import annotations

import pytest

from replicator.registry.http.http11 import (
    MAX_HEAD_BYTES,
    Framing,
    ProtocolError,
    ResponseHead,
    body_plan,
    chunk,
    encode_request_head,
    parse_chunk_size,
    parse_response_head,
)


def head(status: int = 200, *headers: tuple[bytes, bytes], http10: bool = False) -> ResponseHead:
    return ResponseHead(status, b"", list(headers), http10)


class TestRequestHead:
    def test_encoded(self) -> None:
        """The request line, then each header, then a blank line."""
        data = encode_request_head(b"GET", b"/v2/?n=1", [(b"Host", b"r:5000"), (b"Accept", b"*/*")])
        assert data == b"GET /v2/?n=1 HTTP/1.1\r\nHost: r:5000\r\nAccept: */*\r\n\r\n"

    @pytest.mark.parametrize(
        ("method", "target", "headers"),
        [
            (b"GET", b"/x", [(b"Authorization", b"Bearer a\r\nX-Evil: 1")]),
            (b"GET", b"/x", [(b"Bad Name", b"v")]),
            (b"GET", b"/x\r\nHost: evil", []),
            (b"GET", b"/a b", []),
            (b"G T", b"/x", []),
            (b"GET", b"", []),
        ],
        ids=["crlf-in-value", "space-in-name", "crlf-in-target", "space-in-target",
             "bad-method", "empty-target"],
    )  # fmt: skip
    def test_refused(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Anything that would change the message's framing is refused."""
        with pytest.raises(ProtocolError):
            encode_request_head(method, target, headers)


class TestResponseHead:
    def test_parsed(self) -> None:
        """Status, reason and headers (values trimmed), in order."""
        parsed = parse_response_head(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-A:  1 \r\n\r\n"
        )
        assert (parsed.status, parsed.reason, parsed.http10) == (404, b"Not Found", False)
        assert parsed.headers == [(b"Content-Type", b"application/json"), (b"X-A", b"1")]
        assert parsed.values(b"content-type") == [b"application/json"]

    def test_http10_and_no_reason(self) -> None:
        """An HTTP/1.0 status line without a reason phrase is accepted."""
        parsed = parse_response_head(b"HTTP/1.0 204\r\n\r\n")
        assert (parsed.status, parsed.reason, parsed.http10) == (204, b"", True)

    @pytest.mark.parametrize(
        "data",
        [
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNo-Colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
        ],
        ids=["http2", "four-digit-status", "not-http", "no-colon", "folded", "space-in-name",
             "too-large"],
    )  # fmt: skip
    def test_refused(self, data: bytes) -> None:
        """A malformed or oversized head raises ProtocolError."""
        with pytest.raises(ProtocolError):
            parse_response_head(data)


class TestBodyPlan:
    @pytest.mark.parametrize(
        ("method", "response", "framing", "length", "keep_alive"),
        [
            ("GET", head(200, (b"Content-Length", b"12")), Framing.LENGTH, 12, True),
            ("GET", head(200, (b"Content-Length", b"0")), Framing.NONE, 0, True),
            ("HEAD", head(200, (b"Content-Length", b"12")), Framing.NONE, 0, True),
            ("GET", head(204), Framing.NONE, 0, True),
            ("GET", head(304, (b"Content-Length", b"7")), Framing.NONE, 0, True),
            ("GET", head(200, (b"Transfer-Encoding", b"chunked")), Framing.CHUNKED, 0, True),
            ("GET", head(200, (b"Transfer-Encoding", b"gzip, chunked")), Framing.CHUNKED, 0, True),
            ("GET", head(200, (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")),
             Framing.CHUNKED, 0, False),
            ("GET", head(200, (b"Transfer-Encoding", b"gzip")), Framing.CLOSE, 0, False),
            ("GET", head(200), Framing.CLOSE, 0, False),
            ("GET", head(200, (b"Content-Length", b"5"), (b"Connection", b"close")),
             Framing.LENGTH, 5, False),
            ("GET", head(200, (b"Content-Length", b"5"), http10=True), Framing.LENGTH, 5, False),
            ("GET", head(200, (b"Content-Length", b"5, 5")), Framing.LENGTH, 5, True),
        ],
        ids=["length", "empty", "head", "204", "304", "chunked", "gzip-then-chunked",
             "chunked-wins-over-length", "unframed-coding", "until-close", "connection-close",
             "http10", "repeated-equal-length"],
    )  # fmt: skip
    def test_plan(
        self, method: str, response: ResponseHead, framing: Framing, length: int, keep_alive: bool
    ) -> None:
        """The framing of RFC 9112 section 6.3, and whether the connection is kept."""
        plan = body_plan(method, response)
        assert (plan.framing, plan.length, plan.keep_alive) == (framing, length, keep_alive)

    @pytest.mark.parametrize(
        "value", [b"5, 6", b"-1", b"abc"], ids=["conflicting", "negative", "not-a-number"]
    )
    def test_bad_content_length(self, value: bytes) -> None:
        """A Content-Length that does not give one length raises ProtocolError."""
        with pytest.raises(ProtocolError):
            body_plan("GET", head(200, (b"Content-Length", value)))


class TestChunks:
    @pytest.mark.parametrize(
        ("line", "size"),
        [(b"0", 0), (b"1a", 26), (b"FF", 255), (b"10;name=value", 16), (b"10 ", 16)],
        ids=["zero", "lower-hex", "upper-hex", "extension", "trailing-space"],
    )
    def test_size(self, line: bytes, size: int) -> None:
        """The hex size of a chunk line, extensions ignored."""
        assert parse_chunk_size(line) == size

    @pytest.mark.parametrize(
        "line", [b"", b"zz", b"-1", b"1" * 17], ids=["empty", "not-hex", "negative", "too-long"]
    )
    def test_bad_size(self, line: bytes) -> None:
        """A malformed chunk-size line raises ProtocolError."""
        with pytest.raises(ProtocolError):
            parse_chunk_size(line)

    def test_chunk_frame(self) -> None:
        """A chunk is its hex size, CR LF, the data, CR LF."""
        assert b"".join(chunk(b"x" * 26)) == b"1a\r\n" + b"x" * 26 + b"\r\n"
