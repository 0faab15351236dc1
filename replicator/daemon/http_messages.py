"""What an HttpServer's handlers see and answer: the Request, the Response, and the Route that
maps (method, path) to a handler (and, optionally, an `admit` check run on the head alone).

    async def healthz(request: Request) -> Response:
        return Response.text(200, "ok")

    Route("GET", "/healthz", healthz)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import h11


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request, read whole; header names are lower-case."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive), or None."""
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response; Content-Length is added by the server."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: int, text: str, *headers: tuple[str, str]) -> Response:
        """A plain-text response (a trailing newline is added)."""
        return cls(
            status,
            (text + "\n").encode(),
            (("content-type", "text/plain; charset=utf-8"), *headers),
        )

    @classmethod
    def json(cls, status: int, value: Any, *headers: tuple[str, str]) -> Response:
        """A JSON response."""
        body = json.dumps(value, separators=(",", ":")).encode()
        return cls(status, body, (("content-type", "application/json"), *headers))


Handler = Callable[[Request], Awaitable[Response]]
# Called with the request's head (its body empty) before the body is read: a Response refuses
# the request there (a missing or wrong token), None lets the body be read.
Admit = Callable[[Request], Response | None]


@dataclass(frozen=True, slots=True)
class Route:
    """`path` is an exact path, or a prefix when it ends with '/'."""

    method: str
    path: str
    handler: Handler
    admit: Admit | None = None
    # Whether a request head is an authenticated sender's (may use the reserved places).
    trusts: Callable[[Request], bool] | None = None

    def matches_path(self, path: str) -> bool:
        """Whether `path` is this route's path (or lies under it, for a prefix)."""
        return path == self.path or (self.path.endswith("/") and path.startswith(self.path))


def head_of(head: h11.Request) -> Request:
    """The request as its head tells it, body empty."""
    target = head.target.decode("latin-1")
    raw_path, _, raw_query = target.partition("?")
    return Request(
        method=head.method.decode("ascii", "replace"),
        path=unquote(raw_path),
        query=dict(parse_qsl(raw_query, keep_blank_values=True)),
        headers={
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in head.headers
        },
    )
