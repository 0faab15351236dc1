"""`Link` header parsing (RFC 8288 §3): `<uri-reference>; param=value; ..., <...>; ...`.

The URI is delimited by `<` and `>`, never by commas: a catalog page URL such as
`/v2/_catalog?last=a,b&n=100` holds a comma and must come back whole. Parameter values may be
quoted strings holding commas and semicolons too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# One `; name[=value]` parameter: a token name, then a quoted string or a bare value.
_PARAM = re.compile(
    r"""[ \t]*;[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*"""
    r"""(?:=[ \t]*(?:"((?:[^"\\]|\\.)*)"?|([^\s,;"]*)))?"""
)
_QUOTED_PAIR = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class Link:
    """One link-value: the target URI as written and its parameters (names lower case)."""

    target: str
    params: dict[str, str]

    @property
    def relations(self) -> tuple[str, ...]:
        """The relation types of `rel` (space separated, compared case-insensitively)."""
        return tuple(self.params.get("rel", "").lower().split())


def parse_links(header: str) -> list[Link]:
    """Every link-value of `header`; text that is not one is skipped, not guessed at."""
    links: list[Link] = []
    pos = 0
    while True:
        start = header.find("<", pos)
        close = header.find(">", start + 1) if start >= 0 else -1
        if close < 0:
            return links
        params: dict[str, str] = {}
        pos = close + 1
        while match := _PARAM.match(header, pos):
            quoted, bare = match.group(2), match.group(3)
            value = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else (bare or "")
            # RFC 8288 §3.3: occurrences of a parameter after the first are ignored.
            params.setdefault(match.group(1).lower(), value)
            pos = match.end()
        links.append(Link(header[start + 1 : close].strip(), params))


def next_link(header: str | None) -> str | None:
    """The target of the first link whose relations include `next`, if any."""
    for link in parse_links(header or ""):
        if "next" in link.relations:
            return link.target
    return None
