"""HTTP/1.1 message framing for the registry transport: request heads, response heads, bodies.

Pure functions over bytes (RFC 9112), only what a registry client needs: no pipelining, no
upgrades, no trailers kept. h11 did this before at about a third of our CPU per request (its
event machinery runs for every head, body piece and end of message); a registry copy is
thousands of small requests, and the CPU they cost is taken from the registries sharing the host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# A response head larger than this is refused: registries send a dozen short headers; the cap
# bounds what a hostile server can make us parse (h11's default is 16 KiB).
MAX_HEAD_BYTES = 64 * 1024
# The longest chunk-size line accepted (hex size plus extensions).
MAX_CHUNK_LINE_BYTES = 1024
HEAD_END = b"\r\n\r\n"
LINE_END = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"

# RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")


class ProtocolError(Exception):
    """A message that breaks HTTP/1.1 framing (ours: local; the server's: remote)."""


class Framing(Enum):
    """How a response body is delimited."""

    NONE = "none"  # HEAD, 1xx, 204, 304: no body whatever the headers say
    LENGTH = "length"  # Content-Length bytes
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    CLOSE = "close"  # until the server closes the connection


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A parsed status line and header block."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    http10: bool

    def values(self, name: bytes) -> list[bytes]:
        """The values of header `name` (lower case), in order."""
        return [value for key, value in self.headers if key.lower() == name]


@dataclass(frozen=True, slots=True)
class BodyPlan:
    """How to read the body, and whether the connection can carry another request after it."""

    framing: Framing
    length: int
    keep_alive: bool


def encode_request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request line and headers; refuses a name or value that would break the framing (a
    token from a hostile auth server carrying CR LF must not inject a header)."""
    if not _TOKEN.fullmatch(method) or not target or _has_control(target) or b" " in target:
        raise ProtocolError(f"invalid request line: {method!r} {target[:80]!r}")
    lines = [method + b" " + target + b" HTTP/1.1"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _has_control(value):
            raise ProtocolError(f"invalid header {name[:40]!r}")
        lines.append(name + b": " + value)
    lines.append(b"")
    lines.append(b"")
    return LINE_END.join(lines)


def _has_control(value: bytes) -> bool:
    return b"\r" in value or b"\n" in value or b"\x00" in value


def parse_response_head(data: bytes) -> ResponseHead:
    """Parse a head read up to and including its blank line."""
    if len(data) > MAX_HEAD_BYTES:
        raise ProtocolError(f"response head over {MAX_HEAD_BYTES} bytes")
    lines = data.split(LINE_END)
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError(f"invalid status line {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(b":")
        # A folded line (leading space) or a name with whitespace is refused, as RFC 9112 asks.
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError(f"invalid header line {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return ResponseHead(int(match[2]), match[3] or b"", headers, match[1] == b"0")


def body_plan(method: str, head: ResponseHead) -> BodyPlan:
    """The framing of the response body (RFC 9112 section 6.3) and whether to keep the
    connection."""
    connection = b",".join(head.values(b"connection")).lower()
    keep_alive = not head.http10 and b"close" not in connection
    if method == "HEAD" or head.status < 200 or head.status in (204, 304):
        return BodyPlan(Framing.NONE, 0, keep_alive)
    codings = b",".join(head.values(b"transfer-encoding")).lower()
    if codings:
        if codings.rsplit(b",", 1)[-1].strip() == b"chunked":
            # With Content-Length as well, the length is ignored and the connection not reused.
            chunked_keep = keep_alive and not head.values(b"content-length")
            return BodyPlan(Framing.CHUNKED, 0, chunked_keep)
        return BodyPlan(Framing.CLOSE, 0, False)
    lengths = {value.strip() for value in b",".join(head.values(b"content-length")).split(b",")}
    lengths.discard(b"")
    if not lengths:
        return BodyPlan(Framing.CLOSE, 0, False)
    if len(lengths) > 1 or not all(value.isdigit() for value in lengths):
        raise ProtocolError(f"invalid Content-Length {sorted(lengths)!r}")
    length = int(lengths.pop())
    return BodyPlan(Framing.LENGTH if length else Framing.NONE, length, keep_alive)


def parse_chunk_size(line: bytes) -> int:
    """The size of the chunk announced by `line` (without its CR LF); extensions ignored."""
    match = _CHUNK_SIZE.fullmatch(line)
    if match is None:
        raise ProtocolError(f"invalid chunk size line {line[:40]!r}")
    return int(match[1], 16)


def chunk(data: bytes) -> list[bytes]:
    """`data` framed as one chunk of a chunked request body."""
    return [b"%x\r\n" % len(data), data, LINE_END]
