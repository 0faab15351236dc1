"""The systemd units of systemd/: systemd's own checks, and that they fit the code they run."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from replicator import cli
from replicator.cli import build_parser, main
from replicator.config.loading import (
    DEFAULT_JOURNAL_URL,
    DEFAULT_PATH,
    ENV_VAR,
    WorkersConfig,
    load_config,
)
from replicator.daemon.http_admission import MAX_CONNECTIONS
from replicator.registry.settings import DEFAULT_MAX_IN_FLIGHT
from tests.support.daemon import DaemonSettings, RegistrySpec, replicator_command, write_config
from tests.support.notify_socket import NotifyListener
from tests.support.ports import free_port
from tests.support.unit_files import INSTALLED_BIN, LOCAL_BIN, SYSTEMD, unit_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The bar for `systemd-analyze security` (0 = locked down, 10 = fully exposed).
MAX_EXPOSURE = 2.0
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
EXPOSURE_LINE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+) (\w+)")
# File descriptors beyond connections: the journal, the broker, logs, Python's own.
FD_SLACK = 64
# A process idles at ~50 MiB; under this MemoryMax it could not copy. Above it, a leak would
# take the host before the kernel stopped it.
MIN_MEMORY_MIB = 256
MAX_MEMORY_MIB = 4096
CREDENTIAL_REF = re.compile(r"\$\{?CREDENTIALS_DIRECTORY\}?/([^\"'\s]+)")


@dataclass(frozen=True)
class Service:
    """One service unit and what it runs."""

    file: str
    command: str
    source: str  # the module that implements `command`
    long_running: bool


SERVICES = (
    Service("replicator.service", "run", "replicator/daemon/service.py", long_running=True),
    Service(
        "replicator-bridge.service", "bridge", "replicator/daemon/bridge.py", long_running=True
    ),
    Service("replicator-backfill.service", "backfill", "replicator/cli/backfill.py", False),
)
LONG_RUNNING = tuple(s for s in SERVICES if s.long_running)
UNIT_FILES = (*(s.file for s in SERVICES), "replicator-backfill.timer")

HARDENING = {
    "NoNewPrivileges": ["yes"],
    "CapabilityBoundingSet": [""],
    "AmbientCapabilities": [""],
    "PrivateTmp": ["yes"],
    "PrivateDevices": ["yes"],
    "DevicePolicy": ["closed"],
    "PrivateUsers": ["yes"],
    "ProtectSystem": ["strict"],
    "ProtectHome": ["yes"],
    "ProtectKernelTunables": ["yes"],
    "ProtectKernelModules": ["yes"],
    "ProtectKernelLogs": ["yes"],
    "ProtectControlGroups": ["yes"],
    "ProtectClock": ["yes"],
    "ProtectHostname": ["yes"],
    "ProtectProc": ["invisible"],
    "ProcSubset": ["pid"],
    "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
    "RestrictNamespaces": ["yes"],
    "RestrictRealtime": ["yes"],
    "RestrictSUIDSGID": ["yes"],
    "LockPersonality": ["yes"],
    "MemoryDenyWriteExecute": ["yes"],
    "SystemCallArchitectures": ["native"],
    "SystemCallFilter": ["@system-service", "~@privileged @resources"],
    "KeyringMode": ["private"],
    "RemoveIPC": ["yes"],
    "DynamicUser": ["yes"],
    "UMask": ["0077"],
}


def one(settings: dict[str, list[str]], key: str) -> str:
    """The single value of `key`."""
    values = settings.get(key, [])
    assert len(values) == 1, f"{key} should be set once, is {values}"
    return values[0]


def seconds(value: str) -> float:
    """A systemd time span of the forms used here (`90s`, `2min`, `20h`) in seconds."""
    match = re.fullmatch(r"(\d+)(s|min|h)", value)
    assert match, f"{value!r} is not a simple time span"
    return int(match[1]) * {"s": 1, "min": 60, "h": 3600}[match[2]]


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze with the given arguments."""
    return subprocess.run(
        [SYSTEMD_ANALYZE, "--no-pager", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=cwd,
    )


def local_copies(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """Copies of the units in `folder`, ExecStart pointing at this checkout's console script."""
    copies = []
    for name in names:
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        copy = folder / name
        copy.write_text(text.replace(INSTALLED_BIN, str(LOCAL_BIN)), encoding="utf-8")
        copies.append(copy)
    return copies


class TestSystemdAnalyze:
    @pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.file)
    def test_security_exposure(self, service: Service) -> None:
        """`systemd-analyze security --offline=true` rates every service 2.0 or lower."""
        result = analyze("security", "--offline=true", str(SYSTEMD / service.file))
        assert result.returncode == 0, result.stderr
        match = EXPOSURE_LINE.search(result.stdout)
        assert match, result.stdout[-500:]
        assert match[1] == service.file
        assert float(match[2]) <= MAX_EXPOSURE, result.stdout

    def test_verify_is_silent(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` accepts all units and timers without one warning."""
        copies = local_copies(tmp_path, UNIT_FILES)
        assert any(str(LOCAL_BIN) in c.read_text() for c in copies), "ExecStart was not rewritten"
        result = analyze("verify", "--man=no", *map(str, copies), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout + result.stderr == ""

    def test_verify_reports_unknown_keys(self, tmp_path: Path) -> None:
        """A misspelt directive makes verify print a warning, which the check above catches."""
        (copy,) = local_copies(tmp_path, ("replicator.service",))
        copy.write_text(copy.read_text().replace("ProtectHome=", "ProtectHomes="))
        result = analyze("verify", "--man=no", str(copy), cwd=tmp_path)
        assert "Unknown key" in result.stderr


class TestUnits:
    @pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.file)
    def test_hardening(self, service: Service) -> None:
        """Every service carries the whole hardening set and no network allow list."""
        settings = unit_settings(SYSTEMD / service.file)
        wrong = {k: settings.get(k) for k, v in HARDENING.items() if settings.get(k) != v}
        assert wrong == {}
        assert "IPAddressDeny" not in settings  # registries and brokers may be anywhere
        assert "PrivateNetwork" not in settings

    @pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.file)
    def test_file_descriptors_cover_the_connection_caps(self, service: Service) -> None:
        """LimitNOFILE is set, above the HTTP server's connections (admitted and refused
        ones being told why) plus a pool for 64 registries and slack for the rest."""
        limit = int(one(unit_settings(SYSTEMD / service.file), "LimitNOFILE"))
        registries = 64 * 2 * DEFAULT_MAX_IN_FLIGHT
        assert limit >= 2 * MAX_CONNECTIONS + registries + FD_SLACK

    @pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.file)
    def test_memory_is_bounded(self, service: Service) -> None:
        """MemoryMax is set, between what a process needs and what a host can spare."""
        value = one(unit_settings(SYSTEMD / service.file), "MemoryMax")
        match = re.fullmatch(r"(\d+)([MG])", value)
        assert match, f"MemoryMax={value} is not <n>M or <n>G"
        mib = int(match[1]) * (1024 if match[2] == "G" else 1)
        assert MIN_MEMORY_MIB <= mib <= MAX_MEMORY_MIB

    @pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.file)
    def test_exec_start_runs_an_existing_subcommand(self, service: Service) -> None:
        """ExecStart is the installed console script of pyproject.toml and a real subcommand."""
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        argv = one(unit_settings(SYSTEMD / service.file), "ExecStart").split()
        assert argv[0] == f"{INSTALLED_BIN}/replicator"
        assert Path(argv[0]).name in scripts
        assert service.command in argv
        args = build_parser().parse_args(argv[1:])
        assert args.command == service.command

    @pytest.mark.parametrize("service", LONG_RUNNING, ids=lambda s: s.file)
    def test_notify_and_watchdog(self, service: Service) -> None:
        """Long-running services are Type=notify with a watchdog the program really pings."""
        settings = unit_settings(SYSTEMD / service.file)
        assert one(settings, "Type") == "notify"
        assert one(settings, "NotifyAccess") == "main"
        assert seconds(one(settings, "WatchdogSec")) >= 10
        assert one(settings, "Restart") == "on-failure"
        assert str(cli.EXIT_USAGE) in one(settings, "RestartPreventExitStatus").split()
        code = (ROOT / service.source).read_text()
        assert "Notifier.from_environment()" in code
        assert ".ready(" in code
        # The bridge pings while its loop turns; the daemon while HealthWatch finds it healthy.
        assert "watchdog_loop()" in code or "health.watch()" in code

    @pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.file)
    def test_reload_only_where_sighup_is_handled(self, service: Service) -> None:
        """An ExecReload checks the config, then sends SIGHUP, and only to a program that
        handles it (else it dies)."""
        reload = unit_settings(SYSTEMD / service.file).get("ExecReload")
        if reload is not None:
            *checks, signal_line = reload
            assert signal_line == "/bin/kill -HUP $MAINPID"
            assert checks == [f"{INSTALLED_BIN}/replicator config check --quiet"]
            assert "signal.SIGHUP" in (ROOT / service.source).read_text()

    def test_daemon_reloads(self) -> None:
        """The daemon's unit reloads with SIGHUP (the daemon re-reads its config on it)."""
        assert unit_settings(SYSTEMD / "replicator.service")["ExecReload"]

    def test_stop_timeout_covers_the_drain(self) -> None:
        """systemd waits longer than the default grace period before it sends SIGKILL."""
        settings = unit_settings(SYSTEMD / "replicator.service")
        assert seconds(one(settings, "TimeoutStopSec")) > WorkersConfig().grace_period

    @pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.file)
    def test_config_location(self, service: Service) -> None:
        """The units read the default config path inside their ConfigurationDirectory."""
        settings = unit_settings(SYSTEMD / service.file)
        assert one(settings, "Environment") == f"{ENV_VAR}={DEFAULT_PATH}"
        assert Path("/etc", one(settings, "ConfigurationDirectory")) == DEFAULT_PATH.parent

    def test_journal_shared_by_daemon_and_backfill(self) -> None:
        """Daemon and backfill share one user and the StateDirectory holding the default journal."""
        daemon = unit_settings(SYSTEMD / "replicator.service")
        backfill = unit_settings(SYSTEMD / "replicator-backfill.service")
        journal = Path(DEFAULT_JOURNAL_URL.removeprefix("sqlite:///"))
        for settings in (daemon, backfill):
            assert journal.parent == Path("/var/lib", one(settings, "StateDirectory"))
            assert one(settings, "StateDirectoryMode") == "0700"
        assert one(daemon, "User") == one(backfill, "User")
        bridge = unit_settings(SYSTEMD / "replicator-bridge.service")
        assert one(bridge, "User") != one(daemon, "User")

    def test_one_credential_folder(self) -> None:
        """Every service loads the same credential folder under the same id."""
        loads = {s.file: unit_settings(SYSTEMD / s.file)["LoadCredential"] for s in SERVICES}
        assert len({tuple(v) for v in loads.values()}) == 1
        (value,) = loads["replicator.service"]
        ident, _, folder = value.partition(":")
        assert ident
        assert Path(folder).parent == DEFAULT_PATH.parent

    def test_timer_runs_the_backfill(self) -> None:
        """The timer starts the backfill service daily and catches up after downtime."""
        timer = unit_settings(SYSTEMD / "replicator-backfill.timer", "Timer")
        assert timer.get("Unit", ["replicator-backfill.service"]) == ["replicator-backfill.service"]
        assert one(timer, "OnCalendar") == "daily"
        assert one(timer, "Persistent") == "true"
        backfill = unit_settings(SYSTEMD / "replicator-backfill.service")
        assert one(backfill, "Type") == "oneshot"
        assert seconds(one(backfill, "TimeoutStartSec")) < 24 * 3600

    @pytest.mark.skipif(os.geteuid() != 0, reason="tmpfiles.d creates root-owned folders")
    def test_tmpfiles_creates_the_credential_folder(self, tmp_path: Path) -> None:
        """systemd-tmpfiles creates the credential folder LoadCredential= needs, root-only."""
        (tmp_path / "etc/tmpfiles.d").mkdir(parents=True)
        shutil.copy(SYSTEMD / "replicator-tmpfiles.conf", tmp_path / "etc/tmpfiles.d/r.conf")
        result = subprocess.run(
            ["systemd-tmpfiles", f"--root={tmp_path}", "--create", "r.conf"],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        (value,) = unit_settings(SYSTEMD / "replicator.service")["LoadCredential"]
        folder = tmp_path / value.partition(":")[2].lstrip("/")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert folder.stat().st_uid == 0


@pytest.fixture
def installed_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemd/replicator.toml installed as README.md says, with its credentials loaded."""
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(SYSTEMD / "replicator.toml", etc / "replicator.toml")
    shutil.copytree(SYSTEMD / "replication", etc / "replication")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in CREDENTIAL_REF.findall((etc / "replicator.toml").read_text()):
        (credentials / name).write_text(f"value of {name}\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    return etc / "replicator.toml"


class TestConfigExample:
    def test_loads(self, installed_config: Path) -> None:
        """The example loads, its secrets read from $CREDENTIALS_DIRECTORY, the default journal."""
        config = load_config(installed_config)
        assert config.journal.url == DEFAULT_JOURNAL_URL
        assert config.mqtt.password is not None
        assert config.mqtt.password.get_secret_value() == "value of secret_mqtt.password"
        assert config.bridge.token is not None
        assert all(r.password is not None for r in config.registries.values())
        assert config.registries["primary"].replication.rules

    def test_config_check_passes(self, installed_config: Path) -> None:
        """`replicator config check` accepts the example."""
        assert main(["config", "check", str(installed_config)]) == 0

    def test_credential_names_carry_the_unit_id(self) -> None:
        """Every credential the example names is one LoadCredential=<id>:<folder> provides."""
        (value,) = unit_settings(SYSTEMD / "replicator.service")["LoadCredential"]
        ident = value.partition(":")[0]
        names = CREDENTIAL_REF.findall((SYSTEMD / "replicator.toml").read_text())
        assert names
        assert all(name.startswith(f"{ident}_") for name in names)

    def test_grace_period_below_stop_timeout(self) -> None:
        """The example's drain ends before the unit's TimeoutStopSec."""
        doc = tomllib.loads((SYSTEMD / "replicator.toml").read_text())
        stop = seconds(one(unit_settings(SYSTEMD / "replicator.service"), "TimeoutStopSec"))
        assert doc["workers"]["grace_period"] < stop


def _missing_folder(journal: Path) -> None:
    """The journal's folder does not exist (a wrong StateDirectory, a typo in the URL)."""
    del journal


def _not_a_database(journal: Path) -> None:
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_bytes(b"this is not an SQLite database file, and never was\n" * 100)


UNUSABLE_JOURNALS = {"missing_folder": _missing_folder, "not_a_database": _not_a_database}


class TestExitCodes:
    @pytest.mark.parametrize("service", LONG_RUNNING, ids=lambda s: s.file)
    def test_causes_a_restart_cannot_fix_are_not_restarted(self, service: Service) -> None:
        """RestartPreventExitStatus lists the usage/config and journal-unusable exit codes,
        and not the temporary one (which Restart=on-failure restarts)."""
        prevented = one(unit_settings(SYSTEMD / service.file), "RestartPreventExitStatus").split()
        assert str(cli.EXIT_USAGE) in prevented
        assert str(cli.EXIT_JOURNAL_UNUSABLE) in prevented
        assert str(cli.EXIT_TEMPORARY) not in prevented

    @pytest.mark.parametrize("breakage", list(UNUSABLE_JOURNALS), ids=list(UNUSABLE_JOURNALS))
    def test_daemon_on_an_unusable_journal(self, tmp_path: Path, breakage: str) -> None:
        """`replicator run` on a journal it cannot open exits with EXIT_JOURNAL_UNUSABLE (so
        systemd does not restart it) and first tells systemd why in a STATUS= line."""
        journal = tmp_path / "state" / "journal.db"
        UNUSABLE_JOURNALS[breakage](journal)
        settings = DaemonSettings(
            broker_port=free_port(), journal_url=f"sqlite:///{journal}", client_id="exits"
        )
        source = RegistrySpec("use1", "111122223333", "us-east-1", "http://127.0.0.1:9")
        config = write_config(tmp_path, [source], settings)
        with NotifyListener() as notify:
            env = {**os.environ, "NOTIFY_SOCKET": notify.path}
            result = subprocess.run(
                replicator_command("run", "--config", str(config)),
                capture_output=True, text=True, timeout=60, check=False, env=env,
            )  # fmt: skip
            statuses = notify.statuses()
        assert result.returncode == cli.EXIT_JOURNAL_UNUSABLE, result.stderr
        assert any("journal" in status and str(journal) in status for status in statuses), statuses


# A stand-in for the daemon as $MAINPID: it writes a line to its file on each SIGHUP.
HUP_COUNTER = (
    "import pathlib, signal, sys, time\n"
    "out = pathlib.Path(sys.argv[1])\n"
    "signal.signal(signal.SIGHUP, lambda *_: out.open('a').write('hup\\n'))\n"
    "out.write_text('')\n"
    "time.sleep(120)\n"
)


def run_exec_reload(lines: list[str], env: dict[str, str], main_pid: int) -> int:
    """Run a unit's ExecReload= lines as systemd does: in order, $MAINPID substituted, the
    first that fails ends the reload with its status (a '-' prefix would ignore it)."""
    for line in lines:
        ignore = line.startswith("-")
        argv = line.removeprefix("-").replace(INSTALLED_BIN, str(LOCAL_BIN)).split()
        argv = [str(main_pid) if word == "$MAINPID" else word for word in argv]
        result = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
        if result.returncode != 0 and not ignore:
            return result.returncode
    return 0


class TestReload:
    @pytest.fixture
    def main_pid(self, tmp_path: Path) -> Iterator[tuple[int, Path]]:
        """A process counting the SIGHUPs it receives, as the unit's main process."""
        out = tmp_path / "hups"
        process = subprocess.Popen([sys.executable, "-c", HUP_COUNTER, str(out)])
        try:
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            yield process.pid, out
        finally:
            process.kill()
            process.wait()

    @pytest.mark.parametrize("broken", [False, True], ids=["valid", "broken"])
    def test_exec_reload_checks_the_config_first(
        self, installed_config: Path, main_pid: tuple[int, Path], broken: bool
    ) -> None:
        """The daemon's ExecReload= fails, and sends no SIGHUP, when the config is broken,
        so `systemctl reload` reports the failure; a valid config is signalled."""
        if broken:
            installed_config.write_text(installed_config.read_text() + "\n[workers\n")
        pid, hups = main_pid
        lines = unit_settings(SYSTEMD / "replicator.service")["ExecReload"]
        env = {**os.environ, ENV_VAR: str(installed_config)}
        status = run_exec_reload(lines, env, pid)
        time.sleep(0.5)  # a signal sent is handled within this even on a loaded machine
        if broken:
            assert status != 0
            assert hups.read_text() == ""
        else:
            assert status == 0
            assert hups.read_text() == "hup\n"
