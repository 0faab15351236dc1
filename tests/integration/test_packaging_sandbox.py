"""replicator runs inside the units' sandbox: their system-call filter and no writable code.

systemd is not PID 1 on the test machines, so the two restrictions that could break a Python
program at run time are reproduced by hand: the unit's SystemCallFilter= (expanded with
`systemd-analyze syscall-filter`, loaded with libseccomp, refused calls failing with the unit's
SystemCallErrorNumber=) and MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE flag, which
refuses the same mappings). Both survive execve, so a launcher sets them and execs the program.
"""

from __future__ import annotations

import ctypes.util
import errno
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.mqtt_fixtures import Mosquitto
from tests.support.ports import free_port
from tests.support.unit_files import INSTALLED_BIN, LOCAL_BIN, SYSTEMD, unit_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNIT = SYSTEMD / "replicator.service"  # test_packaging_systemd checks the others match it
# Launcher exit codes meaning "this machine cannot reproduce the restriction".
NO_MDWE, NO_SECCOMP = 77, 78

# argv[1]: {"mdwe": bool, "syscalls": [names] or null, "errno": int, "families": [numbers]};
# argv[2:]: the program. `families` limits socket() as RestrictAddressFamilies= does.
LAUNCHER = """
import ctypes, ctypes.util, json, os, sys
spec = json.loads(sys.argv[1])
if spec["mdwe"]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3+)
        sys.exit(77)
if spec["syscalls"] is not None:
    class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ALLOW, EQ = 0x7FFF0000, 4  # SCMP_ACT_ALLOW, SCMP_CMP_EQ
    context = lib.seccomp_init(0x00050000 | spec["errno"])  # SCMP_ACT_ERRNO(errno)
    for name in spec["syscalls"]:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:  # a name this architecture does not have is skipped, as systemd does
            continue
        if name == "socket" and spec["families"]:
            for family in spec["families"]:  # socket(family, ...) for these families only
                condition = ArgCmp(0, EQ, family, 0)
                lib.seccomp_rule_add_array(context, ALLOW, number, 1, ctypes.byref(condition))
        else:
            lib.seccomp_rule_add_array(context, ALLOW, number, 0, None)
    if lib.seccomp_load(context) != 0:
        sys.exit(78)
os.execv(sys.argv[2], sys.argv[2:])
"""
WRITABLE_CODE_PROBE = """
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("refused")
"""
NETLINK_SOCKET_PROBE = """
import socket
socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
except OSError as exc:
    print("refused", exc.errno)
"""
PRIVILEGED_CALL_PROBE = """
import os
try:
    os.setuid(os.getuid())  # @privileged (@setuid), allowed to anyone outside the filter
except OSError as exc:
    print("refused", exc.errno)
"""
# What the services do at start: import their modules, load a config, open the journal, make a
# TLS context, serve and fetch over HTTP (h11 server, httpx client).
SERVICE_WORKLOAD = """
import asyncio, ssl, sys
import httpx
import replicator.daemon.api, replicator.daemon.bridge, replicator.daemon.service
import replicator.scan.backfill_run, replicator.scan.reconcile
from replicator import logs
from replicator.config.loading import load_config
from replicator.daemon.http_messages import Response, Route
from replicator.daemon.http_server import HttpServer
from replicator.journal.claimers import open_journal

async def ok(_):
    return Response.text(200, "ok")

async def main():
    logs.configure(level="warning")
    load_config(sys.argv[1])
    ssl.create_default_context()
    journal = await open_journal(sys.argv[2])
    await journal.backlog()
    await journal.close()
    async with HttpServer([Route("GET", "/healthz", ok)]) as server:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{server.port}/healthz")
    print(answer.status_code, answer.text.strip())

asyncio.run(main())
"""


@functools.cache
def syscall_group(name: str) -> frozenset[str]:
    """The system calls of a `@group`, nested groups expanded, as systemd-analyze lists them."""
    listing = subprocess.run(
        ["systemd-analyze", "--no-pager", "syscall-filter", name],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    calls: set[str] = set()
    for line in listing.splitlines()[1:]:
        word = line.strip()
        if word and not word.startswith("#"):
            calls |= syscall_group(word) if word.startswith("@") else {word}
    return frozenset(calls)


def allowed_syscalls(settings: dict[str, list[str]]) -> list[str]:
    """The allow list SystemCallFilter= lines build: the first allows, `~` lines take away."""
    allowed: set[str] = set()
    for index, entry in enumerate(settings["SystemCallFilter"]):
        deny = entry.startswith("~")
        assert index or not deny, "the first SystemCallFilter= line must be an allow list"
        named: set[str] = set()
        for word in entry.removeprefix("~").split():
            named |= syscall_group(word) if word.startswith("@") else {word}
        allowed = allowed - named if deny else allowed | named
    return sorted(allowed)


def one_line(settings: dict[str, list[str]], key: str) -> list[str]:
    """The words of the single `key=` line."""
    (value,) = settings[key]
    return value.split()


def sandbox_prefix(unit: Path, *, mdwe: bool = True, seccomp: bool = True) -> list[str]:
    """The launcher command that puts what follows under `unit`'s restrictions."""
    settings = unit_settings(unit)
    if seccomp and ctypes.util.find_library("seccomp") is None:
        pytest.skip("libseccomp is not installed")
    (error_name,) = settings["SystemCallErrorNumber"]
    spec = {
        "mdwe": mdwe and settings["MemoryDenyWriteExecute"] == ["yes"],
        "syscalls": allowed_syscalls(settings) if seccomp else None,
        "errno": getattr(errno, error_name),
        "families": [getattr(socket, f) for f in one_line(settings, "RestrictAddressFamilies")],
    }
    return [sys.executable, "-c", LAUNCHER, json.dumps(spec)]


def skip_if_unsupported(returncode: int | None) -> None:
    """Skip when the launcher said this machine cannot impose a restriction."""
    if returncode == NO_MDWE:
        pytest.skip("the kernel has no PR_SET_MDWE (Linux 6.3+)")
    if returncode == NO_SECCOMP:
        pytest.skip("seccomp filters cannot be loaded here")


def sandboxed(
    *argv: str, mdwe: bool = True, seccomp: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run argv under replicator.service's restrictions."""
    result = subprocess.run(
        [*sandbox_prefix(UNIT, mdwe=mdwe, seccomp=seccomp), *argv],
        capture_output=True, text=True, check=False, timeout=120, cwd=ROOT,
    )  # fmt: skip
    skip_if_unsupported(result.returncode)
    return result


class TestSandbox:
    def test_writable_code_is_refused(self) -> None:
        """The reproduced MemoryDenyWriteExecute= is live: a W+X mapping is refused."""
        result = sandboxed(sys.executable, "-c", WRITABLE_CODE_PROBE, seccomp=False)
        assert result.stdout.strip() == "refused", result.stderr

    def test_privileged_calls_fail_with_the_unit_errno(self) -> None:
        """The reproduced filter is live: setuid() fails with the unit's errno (EPERM)."""
        result = sandboxed(sys.executable, "-c", PRIVILEGED_CALL_PROBE, mdwe=False)
        assert result.stdout.strip() == f"refused {errno.EPERM}", result.stderr

    def test_other_address_families_are_refused(self) -> None:
        """The reproduced RestrictAddressFamilies= is live: AF_INET works, AF_NETLINK does not."""
        result = sandboxed(sys.executable, "-c", NETLINK_SOCKET_PROBE, mdwe=False)
        assert result.stdout.strip() == f"refused {errno.EPERM}", result.stderr

    def test_filter_keeps_the_calls_python_needs(self) -> None:
        """The allow list has what CPython and asyncio need, and not what the unit takes away."""
        allowed = set(allowed_syscalls(unit_settings(UNIT)))
        assert {"execve", "epoll_wait", "socket", "connect", "mmap", "fsync"} <= allowed
        assert not {"setuid", "setpriority", "sched_setaffinity", "mount"} & allowed

    def test_services_start_in_the_sandbox(self, tmp_path: Path) -> None:
        """Config, journal, TLS and HTTP serve/fetch work under the filter without W+X memory."""
        journal = f"sqlite:///{tmp_path / 'journal.db'}"
        config = str(ROOT / "configs" / "demo.toml")
        result = sandboxed(sys.executable, "-c", SERVICE_WORKLOAD, config, journal)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "200 ok"

    def test_cli_runs_in_the_sandbox(self) -> None:
        """The console script itself runs `config check` under both restrictions."""
        replicator = str(LOCAL_BIN / "replicator")
        result = sandboxed(replicator, "config", "check", "configs/demo.toml")
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith("ok\n")


# How long a service may take to send READY=1: Python start-up, imports and the first CONNACK
# take about a second; this covers a loaded 2-core machine.
READY_TIMEOUT_SECONDS = 30.0
# WATCHDOG_USEC handed to the services: short, so the test sees pings within a second.
WATCHDOG_USEC = 1_000_000
BRIDGE_TOKEN = "sandbox-test-token"


class NotifySocket:
    """Stands in for systemd's $NOTIFY_SOCKET: collects the services' notifications."""

    def __init__(self) -> None:
        self.address = f"@replicator-test-{os.getpid()}-{secrets.token_hex(4)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.address[1:])
        self.received: list[str] = []

    def wait_for(self, line: str, process: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait for a notification `line` (or `KEY=` prefix); fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while not any(got == line or got.startswith(line) for got in self.received):
            ended = process.poll() is not None  # before reading: its last datagrams are queued
            remaining = deadline - time.monotonic()
            self._sock.settimeout(max(min(remaining, 0.5), 0.01))
            try:
                self.received += self._sock.recv(4096).decode().splitlines()
            except TimeoutError:
                if ended:
                    skip_if_unsupported(process.returncode)
                    pytest.fail(f"exited {process.returncode} before {line}: {self.received}")
                if remaining <= 0:
                    pytest.fail(f"no {line} in {timeout}s; got {self.received}")

    def close(self) -> None:
        """Stop listening."""
        self._sock.close()


@dataclass
class Setup:
    """A config like systemd/replicator.toml, pointing at a test broker and free ports."""

    config: Path
    credentials: Path
    http_port: int
    bridge_port: int


@pytest.fixture
def setup(tmp_path: Path, mosquitto: Mosquitto) -> Setup:
    """The config and credential folder a unit would hand over, for this test's broker."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "secret_bridge.token").write_text(BRIDGE_TOKEN + "\n")
    http_port, bridge_port = free_port(), free_port()
    config = tmp_path / "replicator.toml"
    config.write_text(
        f"""
        version = 1
        [journal]
        url = "sqlite:///{tmp_path / "journal.db"}"
        [mqtt]
        port = {mosquitto.port}
        client_id = "sandbox-{secrets.token_hex(4)}"
        [http]
        listen = "127.0.0.1:{http_port}"
        [bridge]
        listen = "127.0.0.1:{bridge_port}"
        token_file = "$CREDENTIALS_DIRECTORY/secret_bridge.token"
        [registries.use1]
        account = "111122223333"
        region = "us-east-1"
        url = "http://127.0.0.1:{free_port()}"
        """.replace("\n        ", "\n")
    )
    return Setup(config, credentials, http_port, bridge_port)


def start_unit(
    unit: Path, setup: Setup, notify: NotifySocket, log: Path
) -> subprocess.Popen[bytes]:
    """Start the unit's ExecStart (on this checkout) under its sandbox, env as systemd sets it."""
    settings = unit_settings(unit)
    (exec_start,) = settings["ExecStart"]
    argv = exec_start.replace(INSTALLED_BIN, str(LOCAL_BIN)).split()
    env = {
        "PATH": os.environ["PATH"],
        "NOTIFY_SOCKET": notify.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "CREDENTIALS_DIRECTORY": str(setup.credentials),
    }
    for assignment in settings["Environment"]:
        key, _, _ = assignment.partition("=")
        env[key] = str(setup.config)  # the unit's REPLICATOR_CONFIG, moved to the test's file
    with log.open("wb") as output:
        return subprocess.Popen(
            [*sandbox_prefix(unit), *argv], env=env, stdout=output, stderr=output, cwd=ROOT
        )


class TestServicesUnderTheirUnits:
    @pytest.fixture
    def notify(self) -> Iterator[NotifySocket]:
        """A notify socket for one test."""
        notify = NotifySocket()
        yield notify
        notify.close()

    def _stop(self, process: subprocess.Popen[bytes], notify: NotifySocket, unit: Path) -> None:
        (timeout,) = unit_settings(unit)["TimeoutStopSec"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=float(timeout.removesuffix("s"))) == 0
        notify.wait_for("STOPPING=1", process, 1.0)

    def test_daemon(self, setup: Setup, notify: NotifySocket, tmp_path: Path) -> None:
        """`replicator run` under its unit: READY, watchdog pings, ready API, reload, clean stop."""
        unit = SYSTEMD / "replicator.service"
        process = start_unit(unit, setup, notify, tmp_path / "daemon.log")
        try:
            notify.wait_for("READY=1", process, READY_TIMEOUT_SECONDS)
            notify.received.clear()
            notify.wait_for("WATCHDOG=1", process, 2 * WATCHDOG_USEC / 1e6)
            api = f"http://127.0.0.1:{setup.http_port}"
            assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
            process.send_signal(signal.SIGHUP)  # what ExecReload sends
            deadline = time.monotonic() + 10
            while b"config_reloaded" not in (tmp_path / "daemon.log").read_bytes():
                assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
                time.sleep(0.1)
            assert httpx.get(f"{api}/healthz", timeout=5).status_code == 200
            self._stop(process, notify, unit)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    def test_bridge(self, setup: Setup, notify: NotifySocket, tmp_path: Path) -> None:
        """`replicator bridge` under its unit: READY, watchdog, a webhook published, clean stop."""
        unit = SYSTEMD / "replicator-bridge.service"
        process = start_unit(unit, setup, notify, tmp_path / "bridge.log")
        try:
            notify.wait_for("READY=1", process, READY_TIMEOUT_SECONDS)
            notify.received.clear()
            notify.wait_for("WATCHDOG=1", process, 2 * WATCHDOG_USEC / 1e6)
            answer = httpx.post(
                f"http://127.0.0.1:{setup.bridge_port}/events/use1",
                content=b'{"events": []}',
                headers={
                    "authorization": f"Bearer {BRIDGE_TOKEN}",
                    "content-type": "application/json",
                },
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            self._stop(process, notify, unit)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
