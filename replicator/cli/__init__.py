"""The `replicator` command: parses arguments and hands each subcommand to its module."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from replicator import __version__
from replicator.cli import parsing
from replicator.errors import ConfigError, JournalError, ReplicatorError, UsageError

# Each module registers its subcommand(s) with `register(subparsers)`; `set_defaults(func=...)`
# names the handler, which returns the exit code (EXIT_* below).
COMMAND_MODULES = (
    "replicator.cli.copy",
    "replicator.cli.run",
    "replicator.cli.config_check",
    "replicator.cli.jobs",
    "replicator.cli.bridge",
    "replicator.cli.backfill",
    "replicator.cli.verify",
)

# Which module registers each command, so a command imports only its own module (a copy need
# not load SQLAlchemy); `replicator --help` and unknown commands load them all.
COMMAND_OWNERS = {
    "copy": "replicator.cli.copy",
    "run": "replicator.cli.run",
    "config": "replicator.cli.config_check",
    "status": "replicator.cli.jobs",
    "jobs": "replicator.cli.jobs",
    "retry": "replicator.cli.jobs",
    "bridge": "replicator.cli.bridge",
    "backfill": "replicator.cli.backfill",
    "verify": "replicator.cli.verify",
}

# Services log their lifecycle at info; one-shot commands stay quiet unless asked.
LONG_RUNNING = frozenset({"run", "bridge"})

# Exit codes by cause. systemd names the BSD ones in `systemctl status` (status=74/IOERR), and
# the units' RestartPreventExitStatus= lists those a restart cannot cure.
EXIT_OK = 0
# The command ran and failed (copies failed, drift found, a job not found).
EXIT_FAILED = 1
# The command line or the config file is wrong: not restarted.
EXIT_USAGE = 2
# The journal cannot be opened and will not be by trying again (a folder that does not exist,
# no permission, not a database, a newer schema): sysexits' EX_IOERR, not restarted.
EXIT_JOURNAL_UNUSABLE = 74
# A service stopped on a cause that may pass (a PostgreSQL journal not answering yet):
# sysexits' EX_TEMPFAIL, restarted.
EXIT_TEMPORARY = 75


# Each command's one-line help, for `replicator --help` without importing any command module
# (a test checks each module registers its command with this same text).
COMMAND_HELP = {
    "copy": "copy an image, a repository or (-r) every repository under a prefix",
    "run": "run the replication daemon (MQTT events -> journal -> copies)",
    "config": "check the daemon configuration",
    "status": "where an image has been replicated (ECR DescribeImageReplicationStatus)",
    "jobs": "list replication jobs",
    "retry": "re-queue failed jobs",
    "bridge": "receive registry webhooks and publish them on the MQTT bus",
    "backfill": "replicate images that already exist at the sources",
    "verify": "find drift between sources and destinations (exit 1 on drift)",
}
DESCRIPTION = "Replicate container images between OCI registries, cross-region and cross-account."
# What each exit code means, as `replicator --help` lists them.
EXIT_MEANINGS = (
    (EXIT_OK, "done"),
    (EXIT_FAILED, "failed: a copy or a job failed, drift was found, or an image is unknown"),
    (EXIT_USAGE, "the command line or the config file is wrong (systemd does not restart)"),
    (EXIT_JOURNAL_UNUSABLE, "the journal cannot be opened (systemd does not restart)"),
    (EXIT_TEMPORARY, "run/bridge stopped on a cause that may pass (systemd restarts)"),
)
EXAMPLES = """\
examples:
  replicator copy src.example/app:v1 dst.example/app:v1
  replicator copy -r src.example/team dst.example/mirror/team
  replicator config check /etc/replicator/replicator.toml
  replicator run                        # the daemon; config from $REPLICATOR_CONFIG
  replicator jobs --state FAILED        # then: replicator retry --all-failed
  replicator status --repository prod/app --image-tag v1
  replicator COMMAND --help             # a command's options"""


def epilog() -> str:
    """Examples and exit codes, below the commands in `replicator --help`."""
    codes = "\n".join(f"  {code:<4}{meaning}" for code, meaning in EXIT_MEANINGS)
    return f"{EXAMPLES}\n\nexit codes:\n{codes}"


def _top_parser() -> tuple[parsing.Parser, argparse._SubParsersAction[parsing.Parser]]:
    parser = parsing.Parser(
        prog="replicator",
        description=DESCRIPTION,
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"replicator {__version__}")
    parsing.add_global_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser, subparsers


def build_parser(command: str | None = None) -> parsing.Parser:
    """The argument parser: every subcommand, or only `command`'s module when it is known."""
    parser, subparsers = _top_parser()
    owner = COMMAND_OWNERS.get(command or "")
    for name in (owner,) if owner else COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    parsing.add_global_options_everywhere(parser)
    return parser


def _light_parser() -> parsing.Parser:
    """The commands by name and help only: `--help`, `--version` and a mistyped command are
    answered without importing a command module (0.15 s instead of 0.7 s)."""
    parser, subparsers = _top_parser()
    for name, text in COMMAND_HELP.items():
        subparsers.add_parser(name, help=text, add_help=False)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The first argument that is not an option (or a global option's value): the command."""
    return parsing.command_of(argv)


def _wants_json(argv: Sequence[str]) -> bool:
    words = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in words


def _usage_error(exc: parsing.ArgumentsError, command: str | None, as_json: bool) -> int:
    """Report a command line that does not parse: usage and message on stderr (one JSON log
    line when stderr is the journal's), and with --json the error document on stdout; exit 2
    either way."""
    from replicator import logs

    if logs.stderr_is_journal():
        logs.configure(json=True)
        logs.get_logger(__name__).error(
            "command_failed",
            command=command or "",
            code=UsageError.code,
            error=f"{exc.prog}: {exc.message}",
            exit_code=EXIT_USAGE,
        )
    else:
        sys.stderr.write(exc.usage)
        print(f"{exc.prog}: error: {exc.message}", file=sys.stderr)
    if as_json:
        from replicator.cli.documents import error_document, print_json

        print_json(error_document(command or "", UsageError.code, exc.message))
    return EXIT_USAGE


def exit_code(exc: ReplicatorError, *, service: bool) -> int:
    """The exit code of a command ended by `exc` (usage and config errors aside): a journal
    that cannot be used, a temporary cause of a service (a one-shot command says 1, as it
    always has), or a failure."""
    if isinstance(exc, JournalError) and not exc.temporary:
        return EXIT_JOURNAL_UNUSABLE
    if service and exc.temporary:
        return EXIT_TEMPORARY
    return EXIT_FAILED


def _failed(command: str, exc: ReplicatorError, code: int, *, as_json: bool) -> int:
    """Report a failed command on stderr, and with --json as the error document on stdout.

    A service (or any command whose stderr is the journal) writing JSON log lines reports it
    as one more log line, `command_failed` at error, so its log stays JSON to the end."""
    from replicator import logs

    if command in LONG_RUNNING:
        from replicator.daemon.sd_notify import Notifier

        # `systemctl status` shows the last STATUS= beside the exit code: the why of the stop.
        Notifier.from_environment().status(f"stopped (exit {code}): {exc.code}: {exc}")
    if logs.structured() and (command in LONG_RUNNING or logs.stderr_is_journal()):
        logs.get_logger(__name__).error(
            "command_failed", command=command, code=exc.code, error=str(exc), exit_code=code
        )
    elif code == EXIT_USAGE:
        print(f"replicator {command}: {exc}", file=sys.stderr)
    else:
        print(f"replicator {command}: {exc.code}: {exc}", file=sys.stderr)
    if as_json:
        from replicator.cli.documents import error_document, print_json

        print_json(error_document(command, exc.code, str(exc)))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = parsing.command_of(argv)
    as_json = _wants_json(argv)
    try:
        parser = build_parser(command) if command in COMMAND_OWNERS else _light_parser()
        args = parsing.parse(parser, argv)
    except parsing.ArgumentsError as exc:
        return _usage_error(exc, command, as_json)
    from replicator import logs

    level = args.log_level or ("info" if args.command in LONG_RUNNING else "warning")
    logs.configure(level=level)
    as_json = bool(getattr(args, "json", False))
    # `config check` is the one two-word command.
    name = " ".join(filter(None, (args.command, getattr(args, "config_command", None))))
    try:
        code: int = args.func(args)
    except (UsageError, ConfigError) as exc:
        return _failed(name, exc, EXIT_USAGE, as_json=as_json)
    except ReplicatorError as exc:
        return _failed(
            name, exc, exit_code(exc, service=args.command in LONG_RUNNING), as_json=as_json
        )
    except BaseExceptionGroup as group:
        # A daemon's task group (its API server, the bus, the workers) failing on one of our
        # errors: reported as that error, not as a traceback of the group.
        inner = _replicator_error_in(group)
        if inner is None:
            raise
        usage = isinstance(inner, UsageError | ConfigError)
        code = EXIT_USAGE if usage else exit_code(inner, service=args.command in LONG_RUNNING)
        return _failed(name, inner, code, as_json=as_json)
    except KeyboardInterrupt:
        print(f"replicator {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `replicator jobs | head`: the reader left; say nothing more and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    return code


def _replicator_error_in(group: BaseExceptionGroup[BaseException]) -> ReplicatorError | None:
    """The first ReplicatorError among the (nested) exceptions of `group`, or None."""
    for exc in group.exceptions:
        if isinstance(exc, ReplicatorError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _replicator_error_in(exc)
            if found is not None:
                return found
    return None


def entry_point() -> NoReturn:
    """The console script and `python -m replicator`: run `main`, then exit with its code."""
    code = main()
    # At exit the interpreter runs a full garbage collection over every object the imports
    # made (SQLAlchemy, pydantic): 0.12-0.15 s per command here, against 0.01 s with them
    # frozen out of the collector's view (measured). The process is ending, so what is left
    # in cycles goes with it; files and the journal are closed by now, and atexit handlers
    # (logging's flush) still run.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry_point()
