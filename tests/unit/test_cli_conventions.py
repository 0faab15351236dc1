"""The command line as skopeo and crane users type it: global options anywhere, unknown options
named, skopeo's spellings, credentials from files, the environment or stdin, a fast --help."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from replicator import cli
from replicator.cli import copy_options, parsing
from replicator.errors import UsageError
from replicator.registry.credentials import Credentials

ROOT = Path(__file__).resolve().parents[2]
SRC = "registry.example:5000/team/app:v1"
DST = "mirror.example/team/app:v1"
# Commands that read the config, each with the arguments it needs besides --config.
CONFIG_COMMANDS = [
    ["run"],
    ["bridge"],
    ["backfill"],
    ["verify"],
    ["jobs"],
    ["retry", "--all-failed"],
    ["status", "--repository", "app", "--image-tag", "v1"],
    ["config", "check"],
]


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse as `main` does: only the named command's module loaded."""
    return parsing.parse(cli.build_parser(parsing.command_of(argv)), argv)


def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`replicator ARGV...` in a child process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "replicator", *argv],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, input=stdin,
    )  # fmt: skip


class TestGlobalOptions:
    @pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=lambda c: c[0])
    def test_config_before_the_command(self, command: list[str]) -> None:
        """`replicator --config FILE CMD` gives CMD that config file."""
        assert parse(["--config", "x.toml", *command]).config == "x.toml"

    @pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=lambda c: c[0])
    def test_config_after_the_command(self, command: list[str]) -> None:
        """`replicator CMD --config FILE` too."""
        assert parse([*command, "--config", "x.toml"]).config == "x.toml"

    @pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=lambda c: c[0])
    def test_log_level_after_the_command(self, command: list[str]) -> None:
        """`--log-level` is accepted after the command as well as before it."""
        assert parse([*command, "--log-level", "debug"]).log_level == "debug"
        assert parse(["--log-level", "error", *command]).log_level == "error"

    def test_config_defaults_to_none(self) -> None:
        """Without --config anywhere, the command sees None (then $REPLICATOR_CONFIG)."""
        assert parse(["jobs"]).config is None

    def test_config_check_file_and_option(self) -> None:
        """`config check FILE` and `--config FILE config check` both reach the command."""
        assert parse(["config", "check", "a.toml"]).file == "a.toml"
        assert parse(["--config", "b.toml", "config", "check"]).config == "b.toml"

    def test_global_options_as_typed(self) -> None:
        """`replicator --config missing.toml run` is a config error naming the file, not
        argparse's "invalid choice: 'missing.toml'"."""
        done = run("--config", "/nonexistent/r.toml", "jobs")
        assert done.returncode == cli.EXIT_USAGE
        assert "/nonexistent/r.toml" in done.stderr
        assert "invalid choice" not in done.stderr


class TestUnknownOptions:
    def test_unknown_option_named_not_taken_as_source(self) -> None:
        """`copy --platform linux/amd64 SRC DST` is refused naming --platform (exit 2)."""
        done = run("copy", "--platform", "linux/amd64", SRC, DST)
        assert done.returncode == cli.EXIT_USAGE
        assert "unknown option --platform" in done.stderr

    @pytest.mark.parametrize(
        "argv",
        [
            ["copy", SRC, DST, "--platform=linux/amd64"],
            ["jobs", "--bogus"],
            ["--bogus", "jobs"],
            ["config", "check", "--strict"],
            ["backfill", "-x"],
        ],
        ids=["after-positionals", "jobs", "before-command", "nested", "short"],
    )
    def test_unknown_options_everywhere(self, argv: list[str]) -> None:
        """An option no parser knows is reported by name, wherever it stands."""
        with pytest.raises(parsing.ArgumentsError) as caught:
            parse(argv)
        assert caught.value.message.startswith("unknown option -")

    def test_option_like_words_after_double_dash_are_positional(self) -> None:
        """After `--` a word starting with `-` is an argument, as POSIX says."""
        args = parse(["copy", "--", "-odd/name", DST])
        assert args.src == "-odd/name"

    def test_json_usage_error_on_stdout(self) -> None:
        """With --json a usage error is also a JSON error document on stdout (exit 2)."""
        done = run("copy", "--json", "--platform", "x", SRC, DST)
        assert done.returncode == cli.EXIT_USAGE
        document = json.loads(done.stdout)
        assert document["schema"] == 1
        assert document["error"]["code"] == "USAGE"
        assert "--platform" in document["error"]["message"]


class TestSkopeoSpellings:
    @pytest.mark.parametrize(
        ("argv", "src", "dst"),
        [
            (["--src-tls-verify", SRC, DST], True, True),
            (["--src-tls-verify=false", SRC, DST], False, True),
            (["--src-tls-verify", "false", SRC, DST], False, True),
            (["--dest-tls-verify=false", SRC, DST], True, False),
            (["--dst-tls-verify", "no", SRC, DST], True, False),
            ([SRC, DST, "--dest-tls-verify"], True, True),
            ([SRC, DST], True, True),
        ],
        ids=["bare", "equals", "separate", "dest", "dst-legacy", "bare-last", "default"],
    )
    def test_tls_verify(self, argv: list[str], src: bool, dst: bool) -> None:
        """Bare, `=BOOL` and `BOOL` forms, `dest` and `dst` spellings, positionals intact."""
        args = parse(["copy", *argv])
        assert (args.src_tls_verify, args.dst_tls_verify) == (src, dst)
        assert (args.src, args.dst) == (SRC, DST)

    def test_dest_aliases(self) -> None:
        """--dest-creds, --dest-ca-file and --dest-authfile are skopeo's names for dst."""
        args = parse(
            ["copy", "--dest-creds", "u:p", "--dest-ca-file", "ca.pem", "--dest-authfile",
             "a.json", "--all", SRC, DST]
        )  # fmt: skip
        assert (args.dst_creds, args.dst_ca_file, args.dst_authfile) == ("u:p", "ca.pem", "a.json")
        assert args.all


def namespace(**given: object) -> argparse.Namespace:
    """copy's arguments with every credential option unset but `given`."""
    args = parse(["copy", SRC, DST])
    for name, value in given.items():
        setattr(args, name, value)
    return args


class TestCredentialSources:
    def test_copy_help_names_the_environment(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`copy --help` names $REPLICATOR_SRC_CREDS and $REPLICATOR_DEST_CREDS and where they
        stand among the credential sources."""
        with pytest.raises(SystemExit):
            cli.main(["copy", "--help"])
        text = capsys.readouterr().out
        for variable in copy_options.ENV_CREDS.values():
            assert f"${variable}" in text
        assert "credentials, per side, the first given:" in text

    def test_creds_file(self, tmp_path: Path) -> None:
        """--src-creds-file reads USER:PASS from a file (a trailing newline is not the password)."""
        secret = tmp_path / "creds"
        secret.write_text("robot:s3cret\n")
        resolved = copy_options.resolve(namespace(src_creds_file=str(secret)), environ={})
        assert resolved["src"].explicit == Credentials("robot", "s3cret")

    def test_password_stdin(self) -> None:
        """--dest-username with --dest-password-stdin reads one line of standard input."""
        args = namespace(dst_username="robot", dst_password_stdin=True)
        resolved = copy_options.resolve(args, environ={}, stdin=io.StringIO("s3cret\nrest\n"))
        assert resolved["dst"].explicit == Credentials("robot", "s3cret")

    def test_environment(self) -> None:
        """$REPLICATOR_SRC_CREDS and $REPLICATOR_DEST_CREDS hold USER:PASS."""
        environ = {"REPLICATOR_SRC_CREDS": "a:1", "REPLICATOR_DEST_CREDS": "b:2"}
        resolved = copy_options.resolve(namespace(), environ=environ)
        assert resolved["src"].explicit == Credentials("a", "1")
        assert resolved["dst"].explicit == Credentials("b", "2")

    def test_flag_wins_over_environment(self) -> None:
        """A credential given on the command line wins over the environment's."""
        args = namespace(src_creds="flag:1")
        resolved = copy_options.resolve(args, environ={"REPLICATOR_SRC_CREDS": "env:2"})
        assert resolved["src"].explicit == Credentials("flag", "1")

    def test_no_creds_is_anonymous(self) -> None:
        """--src-no-creds gives no provider even with credentials in the environment."""
        args = namespace(src_no_creds=True)
        resolved = copy_options.resolve(args, environ={"REPLICATOR_SRC_CREDS": "a:1"})
        assert resolved["src"].provider("registry.example") is None

    @pytest.mark.parametrize(
        ("given", "message"),
        [
            ({"src_creds": "u:p", "src_password": "x"}, "give one of"),
            ({"src_password": "x"}, "needs --src-username"),
            ({"src_username": "u"}, "needs --src-password"),
            ({"src_creds": "nocolon"}, "USER:PASS"),
            ({"src_no_creds": True, "src_creds": "u:p"}, "cannot be combined"),
            ({"src_password_stdin": True, "dst_password_stdin": True, "src_username": "u",
              "dst_username": "v"}, "only one side"),
            ({"src_creds_file": "/nonexistent/creds"}, "--src-creds-file"),
        ],
        ids=["two-sources", "password-alone", "user-alone", "no-colon", "anonymous-and-creds",
             "two-stdin", "missing-file"],
    )  # fmt: skip
    def test_contradictions_are_usage_errors(self, given: dict[str, object], message: str) -> None:
        """Conflicting or incomplete credentials are refused before any registry is asked."""
        with pytest.raises(UsageError, match=message):
            copy_options.resolve(namespace(**given), environ={}, stdin=io.StringIO(""))

    def test_stdin_as_typed(self) -> None:
        """`echo PASS | replicator copy --src-username u --src-password-stdin ...` parses and
        reaches the copy (which fails on the unreachable registry, exit 1, not 2)."""
        done = run(
            "copy", "--src-username", "u", "--src-password-stdin", "127.0.0.1:1/a:b",
            "127.0.0.1:1/c:d", stdin="s3cret\n",
        )  # fmt: skip
        assert done.returncode == cli.EXIT_FAILED, done.stderr
        assert "s3cret" not in done.stderr + done.stdout


class TestFastPaths:
    # Imported by `--version` and `--help` would mean a command module was loaded.
    HEAVY = ("replicator.cli.copy", "replicator.journal", "replicator.engine", "sqlalchemy",
             "httpx", "structlog", "pydantic")  # fmt: skip

    @pytest.mark.parametrize("flag", ["--version", "--help"])
    def test_no_command_module_imported(self, flag: str) -> None:
        """`--version` and `--help` import no command module and no heavy library."""
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "replicator", flag],
            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
        assert not [m for m in imported if m.startswith(self.HEAVY)]

    @pytest.mark.parametrize("command", ["jobs", "status", "retry", "run", "bridge"])
    def test_command_help_without_the_journal(self, command: str) -> None:
        """`CMD --help` of a journal command does not load SQLAlchemy (0.07 s instead of 0.9)."""
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "replicator", command, "--help"],
            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
        assert not [m for m in imported if m.startswith(("sqlalchemy", "sqlmodel"))]

    def test_top_level_help_lists_every_command(self) -> None:
        """The light `--help` names every command with the help its module registers."""
        for module in cli.COMMAND_MODULES:
            parser = argparse.ArgumentParser()
            subparsers = parser.add_subparsers()
            importlib.import_module(module).register(subparsers)
            for action in subparsers._choices_actions:
                assert cli.COMMAND_HELP[action.dest] == action.help
        assert set(cli.COMMAND_HELP) == set(cli.COMMAND_OWNERS)


class TestCertDir:
    """skopeo's --src-cert-dir / --dest-cert-dir (containers-certs.d: *.crt, *.cert + *.key)."""

    def test_one_ca_used_as_it_is(self, tmp_path: Path) -> None:
        """A folder with one CA certificate gives that file as the CA bundle."""
        (tmp_path / "ca.crt").write_text("CA\n")
        tls = copy_options.tls_of(namespace(dst_cert_dir=str(tmp_path)), "dst")
        assert tls == copy_options.SideTls(str(tmp_path / "ca.crt"), None)

    def test_several_cas_bundled(self, tmp_path: Path) -> None:
        """Several *.crt are concatenated into one bundle, every certificate kept."""
        (tmp_path / "a.crt").write_text("A")
        (tmp_path / "b.crt").write_text("B\n")
        tls = copy_options.tls_of(namespace(src_cert_dir=str(tmp_path)), "src")
        assert tls.ca_file is not None
        assert Path(tls.ca_file).read_text() == "A\nB\n"

    def test_client_pair(self, tmp_path: Path) -> None:
        """NAME.cert with NAME.key beside it is the client certificate (mTLS)."""
        (tmp_path / "client.cert").write_text("C")
        (tmp_path / "client.key").write_text("K")
        tls = copy_options.tls_of(namespace(src_cert_dir=str(tmp_path)), "src")
        assert tls.cert == (str(tmp_path / "client.cert"), str(tmp_path / "client.key"))
        assert tls.ca_file is None

    @pytest.mark.parametrize(
        ("files", "extra", "message"),
        [
            (["client.cert"], {}, "has no client.key"),
            (["a.cert", "a.key", "b.cert", "b.key"], {}, "more than one client certificate"),
            (["ca.crt"], {"src_ca_file": "x.pem"}, "not both"),
        ],
        ids=["cert-without-key", "two-pairs", "with-ca-file"],
    )
    def test_refused(
        self, tmp_path: Path, files: list[str], extra: dict[str, str], message: str
    ) -> None:
        """An incomplete or ambiguous folder is a usage error before any connection."""
        for name in files:
            (tmp_path / name).write_text("x")
        args = namespace(src_cert_dir=str(tmp_path), **extra)
        with pytest.raises(UsageError, match=message):
            copy_options.tls_of(args, "src")

    def test_missing_folder(self) -> None:
        """A folder that does not exist is named in the error."""
        with pytest.raises(UsageError, match="no such folder"):
            copy_options.tls_of(namespace(src_cert_dir="/nonexistent/certs"), "src")
