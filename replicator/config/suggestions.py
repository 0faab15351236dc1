"""The key a misspelt config key was probably meant to be: "unknown key" says what is wrong,
the nearest known key of the same table says what to write instead."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

# How alike a key must be to be suggested (difflib's ratio): "regoin" -> "region" is 0.83,
# "usernme" -> "username" 0.93, while unrelated keys of one table stay under 0.5.
SIMILAR_ENOUGH = 0.7


def did_you_mean(root: type[BaseModel], loc: Sequence[Any]) -> str:
    """'; did you mean X?' for the unknown key at the end of `loc` (a pydantic error's path
    from `root`), or "" when no key of its table is close."""
    table = _table_at(root, loc[:-1])
    if table is None or not isinstance(loc[-1], str):
        return ""
    known = [field.alias or name for name, field in table.model_fields.items()]
    found = difflib.get_close_matches(loc[-1], known, n=1, cutoff=SIMILAR_ENOUGH)
    return f"; did you mean {found[0]!r}?" if found else ""


def _table_at(root: type[BaseModel], path: Sequence[Any]) -> type[BaseModel] | None:
    """The model of the table at `path`; a dict table's key (a registry's name) or a list's
    index steps to its value type."""
    current: Any = root
    for item in path:
        current = _strip(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(item) if isinstance(item, str) else None
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _strip(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _strip(annotation: Any) -> Any:
    """`annotation` without Annotated[...] and `| None`."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation
