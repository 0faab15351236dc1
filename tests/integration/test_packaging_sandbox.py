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
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.unit_files import SYSTEMD, unit_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNIT = SYSTEMD / "replicator.service"  # test_packaging_systemd checks the others match it
# Launcher exit codes meaning "this machine cannot reproduce the restriction".
NO_MDWE, NO_SECCOMP = 77, 78

# argv[1]: {"mdwe": bool, "syscalls": [names] or null, "errno": int}; argv[2:]: the program.
LAUNCHER = """
import ctypes, ctypes.util, json, os, sys
spec = json.loads(sys.argv[1])
if spec["mdwe"]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3+)
        sys.exit(77)
if spec["syscalls"] is not None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(0x00050000 | spec["errno"])  # SCMP_ACT_ERRNO(errno)
    for name in spec["syscalls"]:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:  # a name this architecture does not have is skipped, as systemd does
            lib.seccomp_rule_add(context, 0x7FFF0000, number, 0)  # SCMP_ACT_ALLOW
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
import replicator.api, replicator.backfill, replicator.bridge, replicator.service
from replicator import logs
from replicator.config import load_config
from replicator.http_server import HttpServer, Response, Route
from replicator.journal.store import Journal

async def ok(_):
    return Response.text(200, "ok")

async def main():
    logs.configure(level="warning")
    load_config(sys.argv[1])
    ssl.create_default_context()
    journal = await Journal.open(sys.argv[2])
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


def sandboxed(
    *argv: str, mdwe: bool = True, seccomp: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run argv under the unit's restrictions; skip where this machine cannot impose them."""
    settings = unit_settings(UNIT)
    if seccomp and ctypes.util.find_library("seccomp") is None:
        pytest.skip("libseccomp is not installed")
    (error_name,) = settings["SystemCallErrorNumber"]
    spec = {
        "mdwe": mdwe and settings["MemoryDenyWriteExecute"] == ["yes"],
        "syscalls": allowed_syscalls(settings) if seccomp else None,
        "errno": getattr(errno, error_name),
    }
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, json.dumps(spec), *argv],
        capture_output=True, text=True, check=False, timeout=120, cwd=ROOT,
    )  # fmt: skip
    if result.returncode == NO_MDWE:
        pytest.skip("the kernel has no PR_SET_MDWE (Linux 6.3+)")
    if result.returncode == NO_SECCOMP:
        pytest.skip("seccomp filters cannot be loaded here")
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
        replicator = str(Path(sys.executable).parent / "replicator")
        result = sandboxed(replicator, "config", "check", "configs/demo.toml")
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith("ok\n")
