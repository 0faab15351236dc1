"""Argument parsing as operators expect it from skopeo and crane.

- Global options (`--config`, `--log-level`) are accepted before or after the subcommand.
- An option no command knows is reported as unknown, never taken as a positional argument.
- Boolean flags take skopeo's forms: bare (`--src-tls-verify`), `=BOOL`, or a following BOOL.
- Parse errors raise `ArgumentsError` instead of exiting, so `--json` can answer in JSON.

Nothing here imports a command module: `replicator --help` and `--version` stay fast.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any, NoReturn

LOG_LEVELS = ("debug", "info", "warning", "error")
# Options that take a value wherever they appear (their value is not the command name).
GLOBAL_VALUE_OPTIONS = ("--config", "--log-level")
CONFIG_HELP = "config file (default: $REPLICATOR_CONFIG, else /etc/replicator/replicator.toml)"
LOG_LEVEL_HELP = "default: $REPLICATOR_LOG_LEVEL, else info for run and bridge, warning otherwise"
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")


class ArgumentsError(Exception):
    """The command line is not valid; `prog` names the (sub)command it was parsed for."""

    def __init__(self, prog: str, usage: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.usage = usage
        self.message = message


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises ArgumentsError instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of exiting: the caller decides how to report (text or JSON)."""
        raise ArgumentsError(self.prog, self.format_usage(), message)


def boolean(text: str) -> bool:
    """`true`/`false` (and 1/0, yes/no), as skopeo's boolean flags take them."""
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# Suffixes of a rate (`--max-bandwidth 8M`): binary multiples, as the sizes in this project are.
RATE_SUFFIXES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MAX_BANDWIDTH_HELP = (
    "blob bytes per second to the destination, all transfers together (suffix k, M or G: "
    "binary multiples; default: no limit)"
)


def byte_rate(text: str) -> int:
    """Bytes per second: a positive integer, optionally with k, M or G (binary multiples)."""
    number, suffix = text.rstrip("kKmMgG"), text[len(text.rstrip("kKmMgG")) :].lower()
    if not number.isascii() or not number.isdigit() or len(suffix) > 1 or int(number) < 1:
        raise argparse.ArgumentTypeError(f"expected bytes per second (8388608, 8M), got {text!r}")
    return int(number) * RATE_SUFFIXES[suffix]


class OptionalBool(argparse.Action):
    """A boolean flag that is true when given bare, or takes `=BOOL` (skopeo's spelling)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", True)
        kwargs.setdefault("metavar", "BOOL")
        super().__init__(option_strings, dest, nargs="?", const=True, type=boolean, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        """Store the flag's value (True when bare)."""
        setattr(namespace, self.dest, values)


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """`--config` and `--log-level`; on subcommands they default to "not given", so a value
    given before the subcommand is not overwritten by the subcommand's default."""
    known = parser._option_string_actions
    if "--config" not in known:
        parser.add_argument(
            "--config", metavar="FILE", help=CONFIG_HELP,
            default=None if top else argparse.SUPPRESS,
        )  # fmt: skip
    if "--log-level" not in known:
        parser.add_argument(
            "--log-level", choices=LOG_LEVELS, help=LOG_LEVEL_HELP,
            default=os.environ.get("REPLICATOR_LOG_LEVEL") if top else argparse.SUPPRESS,
        )  # fmt: skip


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def add_global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Add the global options to every subcommand parser, nested ones included."""
    for child in subparsers_of(parser).values():
        add_global_options(child, top=False)
        add_global_options_everywhere(child)


def command_of(argv: Sequence[str]) -> str | None:
    """The first argument that is not an option (or a global option's value): the command."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--":
            return None
        elif arg in GLOBAL_VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def leaf_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The (sub)parser the command words of `argv` select, for precise error messages."""
    current = parser
    for word in argv:
        children = subparsers_of(current)
        if word in children:
            current = children[word]
    return current


def spell_out_booleans(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """`--flag` bare before a non-boolean word becomes `--flag=true`, so the word stays a
    positional argument (`copy --src-tls-verify SRC DST`), as with skopeo's Go flags."""
    flags = {
        option
        for action in parser._actions
        if isinstance(action, OptionalBool)
        for option in action.option_strings
    }
    result: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            return result + list(argv[index:])
        following = argv[index + 1] if index + 1 < len(argv) else None
        if arg in flags and (
            following is None or following.lower() not in TRUE_WORDS + FALSE_WORDS
        ):
            result.append(f"{arg}=true")
        else:
            result.append(arg)
    return result


def is_option(word: str) -> bool:
    """Whether a left-over word looks like an option (`-x`, `--name`), not a value."""
    if not word.startswith("-") or word == "-":
        return False
    try:
        float(word)
    except ValueError:
        return True
    return False


def parse(parser: Parser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse `argv`; an unknown option is reported by name, whatever argparse made of the
    words around it (`copy --platform linux/amd64 SRC DST` would take `linux/amd64` as SRC)."""
    leaf = leaf_parser(parser, argv)
    words = spell_out_booleans(leaf, argv)
    unknown_first = [w for w in _options_in(words) if not _known(leaf, w) and not _known(parser, w)]
    if unknown_first:
        raise ArgumentsError(
            leaf.prog, leaf.format_usage(),
            f"unknown option {unknown_first[0].partition('=')[0]} (see {leaf.prog} --help)",
        )  # fmt: skip
    args, extras = parser.parse_known_args(words)
    if extras:
        leaf.error(f"unexpected argument {extras[0]!r} (see {leaf.prog} --help)")
    return args


def _options_in(words: Sequence[str]) -> list[str]:
    """The option-looking words before `--`."""
    found = []
    for word in words:
        if word == "--":
            break
        if is_option(word):
            found.append(word)
    return found


def _known(parser: argparse.ArgumentParser, word: str) -> bool:
    """Whether `word` (maybe `--name=value`, maybe an unambiguous prefix) is an option of
    `parser` or of the top-level parser chain (global options are on every subcommand)."""
    name = word.partition("=")[0] if word.startswith("--") else word[:2]
    options = parser._option_string_actions
    if name in options:
        return True
    if name.startswith("--") and parser.allow_abbrev:
        return any(option.startswith(name) for option in options if option.startswith("--"))
    return False
