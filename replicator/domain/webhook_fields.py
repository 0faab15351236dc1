"""Reading the fields of a webhook body: typed, checked with the OCI grammars, each failure an
EventError naming the field and carrying its RejectReason (replicator.domain.webhook_formats)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from replicator.domain.events import RejectReason
from replicator.domain.refs import validate_digest, validate_repository, validate_tag
from replicator.errors import EventError, InvalidReferenceError

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


def text(obj: dict[str, Any], key: str, where: str) -> str:
    """`obj[key]`, which must be a non-empty string."""
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise EventError(
            f"{where}.{key} is missing or not a non-empty string", reason=RejectReason.MISSING_FIELD
        )
    return value


def optional(obj: dict[str, Any], key: str, where: str) -> str | None:
    """`obj[key]` when a non-empty string, None when absent, null or empty."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EventError(f"{where}.{key} is not a string", reason=RejectReason.MISSING_FIELD)
    return value


def repository(value: str) -> str:
    """`value` if it is a valid repository name (no `..`, no upper case...)."""
    try:
        return validate_repository(value)
    except InvalidReferenceError as exc:
        raise EventError(str(exc), reason=RejectReason.INVALID_REPOSITORY) from exc


def tag(value: str | None) -> str | None:
    """`value` if it is None or a valid tag."""
    if value is None:
        return None
    try:
        return validate_tag(value)
    except InvalidReferenceError as exc:
        raise EventError(str(exc), reason=RejectReason.INVALID_TAG) from exc


def digest(value: str | None) -> str | None:
    """`value` if it is None or a well-formed digest."""
    if value is None:
        return None
    try:
        return validate_digest(value)
    except InvalidReferenceError as exc:
        raise EventError(str(exc), reason=RejectReason.INVALID_DIGEST) from exc
