"""Re-reading the config on SIGHUP, for the daemon and the bridge alike.

A reload yields either a whole new, valid Config or nothing: an invalid file is refused with a
logged reason (the file and field its ConfigError names) and the caller keeps the config it
has. Some settings are bound when a process starts (the broker connection, a listening
socket); `changed_keys` names those that differ, so the caller can say a restart applies them.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from replicator.config.loading import Config, load_config
from replicator.errors import ConfigError, ReplicatorError
from replicator.logs import get_logger

log = get_logger(__name__)

# What `replicator run` binds when it starts, so a reload leaves it as it was and says so: the
# journal it opened, the broker session (every [mqtt] key), the API's listening socket, and the
# copier and connection pool sized by [workers] concurrency and chunk_threshold (and the
# copier's transfer floor). A section
# ("mqtt") stands for each of its keys.
DAEMON_RESTART_KEYS = (
    "journal.url",
    "mqtt",
    "http.listen",
    "workers.concurrency",
    "workers.chunk_threshold",
    "workers.transfer_floor_rate",
    "workers.transfer_floor_window",
)
# A section's private attributes hold what was read from its `<name>_file` field (a password,
# a token): a change of the file's content is reported under that field.
_FILE_SUFFIX = "_file"


def reread(current: Config) -> Config | None:
    """Load the file `current` came from again; None (logged) when it is no longer valid."""
    try:
        return load_config(current.path)
    except ReplicatorError as exc:
        file, field = (exc.file, exc.field) if isinstance(exc, ConfigError) else (None, None)
        log.error(  # noqa: TRY400 - the message is the point
            "config_reload_refused", error=str(exc), file=file or str(current.path), field=field
        )
        return None


def changed_keys(old: Config, new: Config, keys: Iterable[str]) -> list[str]:
    """Which of the dotted `keys` differ between two loads; a section ("mqtt") stands for
    each of its keys, secrets read from files included (named by their `*_file` key)."""
    changed: list[str] = []
    for key in keys:
        before, after = _lookup(old, key), _lookup(new, key)
        if isinstance(before, BaseModel) and isinstance(after, BaseModel):
            changed += _section_changes(before, after, key)
        elif before != after:
            changed.append(key)
    return changed


def keep_bound(started: Config, fresh: Config, keys: Iterable[str]) -> Config:
    """`fresh` with the dotted `keys` (a section or one key of a section) as in `started`: the
    config a process runs with after a reload that cannot apply them."""
    for key in keys:
        section, _, name = key.partition(".")
        if name:
            kept = getattr(fresh, section).model_copy(
                update={name: getattr(getattr(started, section), name)}
            )
        else:
            kept = getattr(started, section)
        fresh = fresh.model_copy(update={section: kept})
    return fresh


def _lookup(config: Config, key: str) -> object:
    value: object = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _section_changes(before: BaseModel, after: BaseModel, section: str) -> list[str]:
    changed = [
        f"{section}.{name}"
        for name in type(before).model_fields
        if getattr(before, name) != getattr(after, name)
    ]
    private_before = before.__pydantic_private__ or {}
    private_after = after.__pydantic_private__ or {}
    for name, value in private_before.items():
        if value != private_after.get(name):
            field = name.lstrip("_")
            source = f"{field}{_FILE_SUFFIX}"
            key = f"{section}.{source if source in type(before).model_fields else field}"
            if key not in changed:
                changed.append(key)
    return changed
