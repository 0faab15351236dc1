"""The command line frame: command ownership, lazy loading, exit codes."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import subprocess
import sys

import pytest

from replicator import cli
from replicator.errors import (
    BusError,
    JournalError,
    RegistryError,
    ReplicatorError,
    SchemaError,
    TransitionError,
)


class TestCommandOwners:
    """Each command is registered by the module COMMAND_OWNERS names."""

    @pytest.mark.parametrize("module", cli.COMMAND_MODULES)
    def test_every_registered_command_has_its_owner(self, module: str) -> None:
        """Every subcommand a module registers maps back to that module."""
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers(dest="command")
        importlib.import_module(module).register(subparsers)
        assert subparsers.choices, f"{module} registers no command"
        for command in subparsers.choices:
            assert cli.COMMAND_OWNERS[command] == module

    def test_owners_name_only_listed_modules(self) -> None:
        """COMMAND_OWNERS points only at modules in COMMAND_MODULES."""
        assert set(cli.COMMAND_OWNERS.values()) == set(cli.COMMAND_MODULES)


class TestCommandOf:
    """The command name is found past global options."""

    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["copy", "a", "b"], "copy"),
            (["--log-level", "debug", "run"], "run"),
            (["--version"], None),
            ([], None),
        ],
        ids=["plain", "after-log-level", "only-options", "empty"],
    )
    def test_command_of(self, argv: list[str], expected: str | None) -> None:
        """_command_of skips options and the log level's value."""
        assert cli._command_of(argv) == expected


class TestExitCodes:
    """Usage and config errors exit 2."""

    def test_missing_config_file_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A config file that does not exist is a config error naming the file (exit 2)."""
        code = cli.main(["config", "check", "/nonexistent/replicator.toml"])
        assert code == cli.EXIT_USAGE
        assert "/nonexistent/replicator.toml" in capsys.readouterr().err

    def test_unknown_command_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown command is a usage error (exit 2) that lists the commands."""
        assert cli.main(["bogus"]) == cli.EXIT_USAGE
        assert "invalid choice: 'bogus'" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("error", "service", "expected"),
        [
            (JournalError("no such folder", temporary=False), True, cli.EXIT_JOURNAL_UNUSABLE),
            (JournalError("no such folder", temporary=False), False, cli.EXIT_JOURNAL_UNUSABLE),
            (SchemaError("written by a newer replicator"), True, cli.EXIT_JOURNAL_UNUSABLE),
            (JournalError("connection refused"), True, cli.EXIT_TEMPORARY),
            (JournalError("connection refused"), False, cli.EXIT_FAILED),
            (BusError("broker away"), True, cli.EXIT_TEMPORARY),
            (RegistryError("503", temporary=True), False, cli.EXIT_FAILED),
            (TransitionError("a bug"), True, cli.EXIT_FAILED),
        ],
        ids=[
            "journal-unusable-service", "journal-unusable-command", "newer-schema",
            "journal-away-service", "journal-away-command", "broker-away-service",
            "registry-away-command", "bug",
        ],
    )  # fmt: skip
    def test_exit_code_by_cause(self, error: ReplicatorError, service: bool, expected: int) -> None:
        """A journal that cannot be used exits 74 (not restarted); a service's temporary cause
        exits 75 (restarted); a one-shot command's failure stays 1."""
        assert cli.exit_code(error, service=service) == expected

    def test_help_lists_every_exit_code(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`replicator --help` ends with examples and every EXIT_* code with its meaning."""
        with pytest.raises(SystemExit):
            cli.main(["--help"])
        text = capsys.readouterr().out
        assert "examples:" in text
        codes = {v for n, v in vars(cli).items() if n.startswith("EXIT_") and isinstance(v, int)}
        assert {code for code, _ in cli.EXIT_MEANINGS} == codes
        for code, meaning in cli.EXIT_MEANINGS:
            assert f"  {code:<4}{meaning}" in text


class TestEntryPoint:
    """`python -m replicator` and the console script exit with main's code, output flushed."""

    @pytest.mark.parametrize(
        ("argv", "code", "stream", "text"),
        [
            (["config", "check", "/nonexistent/replicator.toml"], 2, "stderr", "/nonexistent"),
            (["--version"], 0, "stdout", "replicator"),
        ],
        ids=["config-error", "version"],
    )
    def test_module_run(self, argv: list[str], code: int, stream: str, text: str) -> None:
        """The process exits with main's code and every line it printed arrives."""
        done = subprocess.run(
            [sys.executable, "-m", "replicator", *argv],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == code
        assert text in getattr(done, stream)

    def test_console_script_is_the_entry_point(self) -> None:
        """The installed `replicator` script calls entry_point, which exits like main."""
        script = importlib.metadata.entry_points(group="console_scripts")["replicator"]
        assert script.value == "replicator.cli:entry_point"
