"""Reading the fields of a webhook body that a bus event does not have (nested objects, lists,
GAR's base64, image references); each failure an EventError naming the field and carrying its
RejectReason. Strings, names and digests are read as the bus parser reads them
(replicator.domain.events.fields)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from replicator.domain.events import RejectReason
from replicator.domain.events.fields import valid_digest, valid_tag
from replicator.errors import EventError

# A delivery naming more manifests than this is refused: Harbor and zot send one artifact,
# Quay one per updated tag; a thousand is far beyond any real push, and bounds the envelope.
MAX_EVENTS = 1000


def decoded(data: str) -> dict[str, Any]:
    """The JSON object base64 `data` holds (GAR's `message.data`)."""
    try:
        value = json.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise EventError(
            "message.data is not base64 of a JSON object", reason=RejectReason.INVALID_JSON
        ) from exc
    if not isinstance(value, dict):
        raise EventError("message.data is not a JSON object", reason=RejectReason.INVALID_JSON)
    return value


def image_path(reference: str) -> str:
    """`host/path[:tag][@digest]` -> `path`: the repository at the registry that serves `host`."""
    host, slash, path = reference.partition("@")[0].partition("/")
    if not slash or not host:
        raise EventError(
            f"{reference[:120]!r} is not host/repository", reason=RejectReason.INVALID_REPOSITORY
        )
    last = path.rpartition("/")[2]
    if ":" in last:
        path = path[: len(path) - len(last)] + last.partition(":")[0]
    return path


def word(value: str) -> str:
    """A short snake_case word of a sender's type name, for ignore reasons and metrics."""
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in value.lower()[:40]).strip("_")
    return cleaned or "unknown"


def mapping(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """`obj[key]`, which must be an object; `where` names `obj` in the error."""
    value = obj.get(key)
    if not isinstance(value, dict):
        raise EventError(
            f"{where}.{key} is missing or not an object", reason=RejectReason.MISSING_FIELD
        )
    return value


def entries(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    """`obj[key]`, which must be a list of at most MAX_EVENTS entries."""
    value = obj.get(key)
    if not isinstance(value, list):
        raise EventError(
            f"{where}.{key} is missing or not a list", reason=RejectReason.MISSING_FIELD
        )
    if len(value) > MAX_EVENTS:
        raise EventError(
            f"{where}.{key} has {len(value)} entries, more than {MAX_EVENTS}",
            reason=RejectReason.TOO_LARGE,
        )
    return value


def tag(value: str | None) -> str | None:
    """`value` if it is None or a valid tag."""
    return None if value is None else valid_tag(value)


def digest(value: str | None) -> str | None:
    """`value` if it is None or a well-formed digest."""
    return None if value is None else valid_digest(value)


def check_host(
    named: str, host: str | None, where: str, aliases: frozenset[str] = frozenset()
) -> None:
    """Refuse a body whose `where` names another registry host than the source's (`host`;
    None: unknown, nothing to check). Case and port are not compared (a web page's URL may leave
    out the port the registry is configured with), and two of `aliases` (names of one registry)
    are the same registry."""
    if host is None or not named:
        return
    named_bare, host_bare = bare_host(named), bare_host(host)
    if named_bare != host_bare and not {named_bare, host_bare} <= aliases:
        raise EventError(
            f"{where} names the registry {named[:120]!r}, not this source's ({host})",
            reason=RejectReason.SOURCE_MISMATCH,
        )


def bare_host(host: str) -> str:
    """`host` without user, port and case: what two spellings of one host share."""
    host = host.lower().rpartition("@")[2]
    if host.startswith("["):  # an IPv6 literal: [::1]:5000
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]
