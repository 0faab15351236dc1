"""The field types and base sections the configuration models share: paths resolved against the
config file's folder, registry names, listen addresses."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

# Registry names appear as one MQTT topic level and in metrics labels.
_NAME_RE = re.compile(r"^[a-z0-9_-]+$")
_UNSET_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def _resolve_path(value: object, info: ValidationInfo) -> Path:
    """Expand `$VAR` and `~`, and resolve a relative path against the config file's folder."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a path (a non-empty string)")
    expanded = os.path.expanduser(os.path.expandvars(value))
    unset = _UNSET_VAR.search(expanded)
    if unset:
        raise ValueError(f"environment variable {unset.group(1)} in {value!r} is not set")
    base = Path((info.context or {}).get("base_dir", "."))
    return base / expanded


def matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    """A validator refusing strings that do not match `pattern`; `what` completes "... is not"."""

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return value


ConfigPath = Annotated[Path, BeforeValidator(_resolve_path)]
RegistryName = Annotated[
    str, matching(_NAME_RE, "a registry name ([a-z0-9_-]+, an MQTT topic level)")
]
Listen = Annotated[str, AfterValidator(_check_listen)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Section(BaseModel):
    """A config table: unknown keys refused, values frozen and strictly typed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Listener(Section):
    """A section with a `listen = "host:port"`."""

    listen: Listen

    @property
    def host(self) -> str:
        """The address part of `listen`, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return int(self.listen.rpartition(":")[2])
