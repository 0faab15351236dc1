"""`WWW-Authenticate` parsing (RFC 9110 §11.6.1): every challenge of the header, then the one
we answer.

A header may carry several challenges separated by commas, and the parameters of one challenge
are separated by commas too: `Bearer realm="r",service="s", Basic realm="x"`. What tells them
apart is the grammar: a parameter is `token = value`, a new challenge starts with a bare token
(the scheme). Quoted strings may hold commas, spaces and escaped quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 9110 §5.6.2 tchar, and §11.2 token68 (base64-like, '=' padding only at the end).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# Unquoted parameter values: RFC 9110 says token, but registries send unquoted URLs
# (`realm=https://auth/token`), so everything up to a comma or space is taken.
_VALUE = re.compile(r"[^\s,]+")
_SPACE = " \t"
# The schemes we can answer, in the order we prefer them: a token scopes the access to one
# repository and never sends the password to the registry itself; docker prefers it too.
PREFERRED_SCHEMES = ("bearer", "basic")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header: its scheme (lower case) and parameters
    (names lower case); a token68 value, when the challenge has one, is under `""`."""

    scheme: str
    params: dict[str, str]


class _Reader:
    """A cursor over the header text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self, chars: str = _SPACE) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.pos)
        if not found:
            return None
        self.pos = found.end()
        return found.group(0)

    def quoted(self) -> str:
        """A quoted-string starting at the cursor; an unterminated one runs to the end."""
        self.pos += 1  # the opening quote
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])  # quoted-pair: the next character as is
                self.pos += 1
            elif char == '"':
                break
            else:
                out.append(char)
        return "".join(out)

    def is_param_ahead(self) -> bool:
        """Whether the cursor is at `token BWS =` (a parameter), not at a new scheme."""
        found = _TOKEN.match(self.text, self.pos)
        if not found:
            return False
        rest = self.text[found.end() :].lstrip(_SPACE)
        if not rest.startswith("="):
            return False
        # `token68` may end in '=' padding: `Basic abc=` and `Basic abc==` are values, not a
        # parameter `abc` (a parameter always has a value after its '=').
        value = rest[1:].lstrip(_SPACE)
        return bool(value) and value[0] not in ",="


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in `header`, in order; junk between challenges is skipped."""
    reader = _Reader(header)
    challenges: list[Challenge] = []
    while True:
        reader.skip(_SPACE + ",")
        if not reader.peek():
            return challenges
        scheme = reader.match(_TOKEN)
        if scheme is None:
            reader.pos += 1  # not a token: skip the character and look for the next challenge
            continue
        challenges.append(Challenge(scheme.lower(), _params(reader)))


def _params(reader: _Reader) -> dict[str, str]:
    params: dict[str, str] = {}
    reader.skip()
    if not reader.is_param_ahead():
        start = reader.pos
        value = reader.match(_TOKEN68)
        reader.skip()
        if value is not None and reader.peek() in ("", ","):
            params[""] = value
            return params
        reader.pos = start  # not a token68: a new challenge (or junk) follows
    while reader.is_param_ahead():
        name = reader.match(_TOKEN) or ""
        reader.skip()
        reader.pos += 1  # '='
        reader.skip()
        value = reader.quoted() if reader.peek() == '"' else (reader.match(_VALUE) or "")
        # RFC 9110: a parameter name occurs once per challenge; the first one counts.
        params.setdefault(name.lower(), value)
        reader.skip()
        if reader.peek() != ",":
            break
        reader.skip(_SPACE + ",")
    return params


def choose_challenge(header: str) -> Challenge:
    """The challenge we answer: Bearer if offered, else Basic, else the first (which the
    caller refuses as unsupported); an empty header gives an empty scheme."""
    challenges = parse_challenges(header)
    for scheme in PREFERRED_SCHEMES:
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return challenges[0] if challenges else Challenge("", {})
