"""Fault rules of the fault proxy: which requests (predicates) get which fault, how often.

A rule fires when its predicate matches and its budget allows: `times` (None = every match)
and `share` (a probability drawn from the proxy's seeded random generator).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from enum import StrEnum
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import httpx

BLOB_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[a-z0-9]+:[a-f0-9]+)$")
OCI_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")


class FaultKind(StrEnum):
    """What the proxy does to a matching request."""

    STATUS = "status"  # answer with a status itself (429, 5xx), upstream never sees it
    CORRUPT = "corrupt"  # flip one byte of the response body, same length
    TRUNCATE = "truncate"  # send part of the body, then close the connection
    RESET = "reset"  # send part of the body, then reset the connection (RST)
    STALL = "stall"  # wait before forwarding the request
    SERVE_BODY = "serve_body"  # answer 200 with given bytes, upstream never sees the request
    REDIRECT = "redirect"  # answer 307 to the same target elsewhere (blob storage), as S3 does
    TRICKLE = "trickle"  # forward the answer, its body a few bytes at a time (a slow link)


@dataclass(frozen=True)
class ProxiedRequest:
    """A request as the proxy saw it."""

    method: str
    target: str

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]


Predicate = Callable[[ProxiedRequest], bool]


def blob_get(digest: str | None = None) -> Predicate:
    """GET of a blob (any, or the one with digest)."""

    def match(request: ProxiedRequest) -> bool:
        found = BLOB_PATH.match(request.path)
        return (
            request.method == "GET"
            and found is not None
            and (digest is None or found["digest"] == digest)
        )

    return match


def manifest_get(reference: str | None = None) -> Predicate:
    """GET (not HEAD) of a manifest (any, or by this tag or digest)."""

    def match(request: ProxiedRequest) -> bool:
        found = MANIFEST_PATH.match(request.path)
        return (
            request.method == "GET"
            and found is not None
            and (reference is None or found["reference"] == reference)
        )

    return match


def manifest_requests(repository: str | None = None) -> Predicate:
    """GET or HEAD of any manifest (of one repository, or of any)."""

    def match(request: ProxiedRequest) -> bool:
        found = MANIFEST_PATH.match(request.path)
        return (
            request.method in ("GET", "HEAD")
            and found is not None
            and (repository is None or found["name"] == repository)
        )

    return match


def uploads() -> Predicate:
    """Any request of a blob upload session (start, chunk, commit) or a mount."""
    return lambda request: "/blobs/uploads/" in request.path


def unheld_mounts(upstream_url: str) -> Predicate:
    """A cross-repository mount of a blob its `from` repository does not hold at the registry
    behind the proxy (asked with a HEAD there): the mounts Pulp refuses `404 BLOB_UNKNOWN`
    where the distribution spec says SHOULD 202 (an upload session instead)."""

    def match(request: ProxiedRequest) -> bool:
        if request.method != "POST" or not request.path.endswith("/blobs/uploads/"):
            return False
        query = parse_qs(urlsplit(request.target).query)
        digest, source = query.get("mount", [""])[0], query.get("from", [""])[0]
        if not digest or not source:
            return False
        # Loopback HEAD from the proxy's thread: milliseconds, and only for mounts.
        answer = httpx.head(f"{upstream_url}/v2/{source}/blobs/{digest}", timeout=10.0)
        return answer.status_code != HTTPStatus.OK

    return match


def requests(method: str | None = None, path_pattern: str | None = None) -> Predicate:
    """Requests with this method (any if None) whose path matches the regex (any if None)."""
    pattern = re.compile(path_pattern) if path_pattern else None
    return lambda request: (
        (method is None or request.method == method)
        and (pattern is None or pattern.search(request.path) is not None)
    )


@dataclass
class Fault:
    """One fault rule; `injected` counts how often it fired. Build with the classmethods."""

    kind: FaultKind
    match: Predicate
    times: int | None = 1
    share: float | None = None
    status: int = 503
    retry_after_seconds: int | None = None
    retry_after_http_date: bool = False
    stall_seconds: float = 0.0
    keep_bytes: int | None = None
    body: bytes = b""
    content_type: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    error_code: str | None = None
    redirect_to: str = ""
    trickle_bytes_per_second: int = 0
    injected: int = 0

    @classmethod
    def status_code(
        cls,
        status: int,
        match: Predicate,
        *,
        times: int | None = 1,
        share: float | None = None,
        retry_after_seconds: int | None = None,
        retry_after_http_date: bool = False,
        error_code: str | None = None,
    ) -> Fault:
        """Answer `status` (with Retry-After in seconds or as an HTTP-date, computed when the
        fault fires) instead of forwarding; `times` None = every match, `share` = probability;
        the body's OCI error code is `error_code`, else TOOMANYREQUESTS for 429, UNAVAILABLE."""
        return cls(
            FaultKind.STATUS,
            match,
            times=times,
            share=share,
            status=status,
            retry_after_seconds=retry_after_seconds,
            retry_after_http_date=retry_after_http_date,
            error_code=error_code,
        )

    @classmethod
    def challenge(
        cls, match: Predicate, www_authenticate: str, *, times: int | None = None
    ) -> Fault:
        """Answer 401 with this `WWW-Authenticate` (a challenge naming another realm than the
        registry's own), every match by default."""
        return cls(
            FaultKind.STATUS,
            match,
            times=times,
            status=401,
            headers=(("www-authenticate", www_authenticate),),
        )

    @classmethod
    def trickle(cls, match: Predicate, bytes_per_second: int, *, times: int | None = None) -> Fault:
        """Forward the answer but send its body at `bytes_per_second` (in pieces of that size,
        one a second), as a source on a congested link does; every match by default."""
        return cls(FaultKind.TRICKLE, match, times=times, trickle_bytes_per_second=bytes_per_second)

    @classmethod
    def corrupt(cls, match: Predicate, *, times: int | None = None) -> Fault:
        """Flip the first byte of the body (length unchanged); every match by default."""
        return cls(FaultKind.CORRUPT, match, times=times)

    @classmethod
    def truncate(cls, match: Predicate, *, keep_bytes: int | None = None, times: int = 1) -> Fault:
        """Send `keep_bytes` of the body (default half) and close the connection."""
        return cls(FaultKind.TRUNCATE, match, times=times, keep_bytes=keep_bytes)

    @classmethod
    def reset(cls, match: Predicate, *, keep_bytes: int | None = None, times: int = 1) -> Fault:
        """Send `keep_bytes` of the body (default half) and reset the connection."""
        return cls(FaultKind.RESET, match, times=times, keep_bytes=keep_bytes)

    @classmethod
    def stall(cls, match: Predicate, seconds: float, *, times: int | None = 1) -> Fault:
        """Hold the request `seconds` before forwarding it (`times` None: every match)."""
        return cls(FaultKind.STALL, match, times=times, stall_seconds=seconds)

    @classmethod
    def serve_body(
        cls,
        match: Predicate,
        body: bytes,
        *,
        content_type: str = OCI_MANIFEST_TYPE,
        times: int | None = None,
    ) -> Fault:
        """Answer 200 with `body` (and its own Docker-Content-Digest), as a registry holding
        those bytes would, to GET and HEAD alike; every match by default."""
        return cls(FaultKind.SERVE_BODY, match, times=times, body=body, content_type=content_type)

    @classmethod
    def redirect(cls, match: Predicate, to_base: str, *, times: int | None = None) -> Fault:
        """Answer 307 with `Location: <to_base><the request's target>` (a registry sending
        a blob GET to its storage); every match by default."""
        return cls(FaultKind.REDIRECT, match, times=times, redirect_to=to_base.rstrip("/"))

    def retry_after(self) -> str | None:
        """The Retry-After value as of now, or None."""
        if self.retry_after_seconds is None:
            return None
        if self.retry_after_http_date:
            return formatdate(time.time() + self.retry_after_seconds, usegmt=True)
        return str(self.retry_after_seconds)


@dataclass(frozen=True)
class RequestRecord:
    """A request the proxy handled: what, when (monotonic), and which fault fired if any."""

    method: str
    target: str
    at: float
    fault: FaultKind | None
