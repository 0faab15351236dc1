"""The contenders: one `replicator copy -r` process, and `skopeo sync`; each timed, with peak RSS.

Peak RSS comes from the kernel: `os.wait4` returns the child's rusage, whose `ru_maxrss` is the
high-water mark of its resident set (KiB on Linux) — no polling, nothing missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Even the latency run of the full corpus takes minutes; this only stops a hung tool.
RUN_TIMEOUT_SECONDS = 900.0


@dataclass(frozen=True)
class RunResult:
    """One timed run of a tool."""

    tool: str
    seconds: float
    exit_code: int
    peak_rss_bytes: int
    stdout: str
    stderr: str
    # User + system CPU of the child (rusage), which the load of a shared machine disturbs less
    # than wall time; and the 1-minute load average when it ended, to read the wall time by.
    cpu_seconds: float = 0.0
    load: float = 0.0

    @property
    def ok(self) -> bool:
        """Exit code 0."""
        return self.exit_code == 0

    def summary(self) -> dict[str, Any]:
        """The JSON object a `--json` run printed, or {}."""
        try:
            value: dict[str, Any] = json.loads(self.stdout)
        except json.JSONDecodeError:
            return {}
        return value


def compile_project() -> None:
    """Byte-compile replicator/ as a regular install would be, so no timed run pays for
    compiling modules edited since (PYTHONDONTWRITEBYTECODE would make every run pay)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(PROJECT_ROOT / "replicator")],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def timed_run(tool: str, command: list[str], *, cwd: Path = PROJECT_ROOT) -> RunResult:
    """Run command; measure wall seconds and peak RSS of the process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd
        )
        deadline = started + RUN_TIMEOUT_SECONDS
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return RunResult(
            tool=tool,
            seconds=seconds,
            exit_code=process.returncode,
            peak_rss_bytes=usage.ru_maxrss * 1024,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            load=os.getloadavg()[0],
        )


def replicator_copy(source: str, destination: str, *, recursive: bool = True) -> RunResult:
    """`replicator copy [-r] SOURCE DESTINATION --json` in one process."""
    command = [sys.executable, "-m", "replicator", "copy", source, destination, "--json"]
    if recursive:
        command.insert(4, "-r")
    return timed_run("replicator copy", command)


def blob_floor(source_host: str, destination_host: str, blobs_file: Path) -> RunResult:
    """`python -m bench.blob_floor`: the corpus's distinct blobs alone, 16 in flight."""
    command = [sys.executable, "-m", "bench.blob_floor", source_host, destination_host]
    return timed_run("blob-only floor", [*command, str(blobs_file)])


def skopeo_sync(
    source_host: str, repositories: list[str], destination_host: str, workdir: Path
) -> RunResult:
    """`skopeo sync --all --preserve-digests` of repositories (all tags) from a YAML list.

    skopeo 1.9's YAML source lists repositories per registry (an empty tag list = all tags) and
    writes each to DESTINATION/<repository>, so one process syncs the whole corpus.
    """
    lines = [f"{source_host}:", "  tls-verify: false", "  images:"]
    lines += [f"    {repository}: []" for repository in repositories]
    spec = workdir / "skopeo-sync.yaml"
    spec.write_text("\n".join(lines) + "\n")
    command = [
        "skopeo",
        "sync",
        "--all",
        "--preserve-digests",
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
        str(spec),
        destination_host,
    ]
    return timed_run("skopeo sync", command)
