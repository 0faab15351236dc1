"""Reading the fields of a bus event: typed, checked with the OCI grammars, each failure an
EventError naming the field and carrying its RejectReason."""

from __future__ import annotations

from typing import Any

from replicator.domain.events import RejectReason
from replicator.domain.images.refs import validate_digest, validate_repository, validate_tag
from replicator.errors import EventError, InvalidReferenceError


def required_str(obj: dict[str, Any], key: str, where: str) -> str:
    """`obj[key]`, which must be a non-empty string; `where` names `obj` in the error."""
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise EventError(
            f"{where}.{key} is missing or not a non-empty string",
            reason=RejectReason.MISSING_FIELD,
        )
    return value


def optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    """`obj[key]` when a non-empty string, None when absent, null or empty."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EventError(f"{where}.{key} is not a string", reason=RejectReason.MISSING_FIELD)
    return value


def optional_tag(obj: dict[str, Any], key: str, where: str) -> str | None:
    """`obj[key]` when a valid tag, None when absent."""
    tag = optional_str(obj, key, where)
    if tag is None:
        return None
    try:
        return validate_tag(tag)
    except InvalidReferenceError as exc:
        raise EventError(f"{where}.{key}: {exc}", reason=RejectReason.INVALID_TAG) from exc


def optional_digest(obj: dict[str, Any], key: str, where: str) -> str | None:
    """`obj[key]` when a well-formed digest, None when absent."""
    digest = optional_str(obj, key, where)
    return None if digest is None else valid_digest(digest)


def valid_digest(value: str) -> str:
    """`value` if it is a well-formed digest."""
    try:
        return validate_digest(value)
    except InvalidReferenceError as exc:
        raise EventError(str(exc), reason=RejectReason.INVALID_DIGEST) from exc


def valid_tag(value: str) -> str:
    """`value` if it is a valid tag."""
    try:
        return validate_tag(value)
    except InvalidReferenceError as exc:
        raise EventError(str(exc), reason=RejectReason.INVALID_TAG) from exc


def valid_repository(value: str) -> str:
    """`value` if it is a valid repository name (no `..`, no upper case...)."""
    try:
        return validate_repository(value)
    except InvalidReferenceError as exc:
        raise EventError(str(exc), reason=RejectReason.INVALID_REPOSITORY) from exc
