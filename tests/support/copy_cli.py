"""Run `replicator copy` as a subprocess, as a user would, and read its --json summary."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import skopeo

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The corpus copies in about a second; retries with Retry-After add a few seconds more.
COPY_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class CopyRun:
    """Exit code and output of one `replicator copy` run."""

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        """The JSON object printed on stdout."""
        try:
            value: dict[str, Any] = json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"no JSON summary on stdout: {self}") from exc
        return value

    @property
    def failure_codes(self) -> list[str]:
        """The `code` of every failure in the summary."""
        return [failure["code"] for failure in self.summary.get("failures", [])]

    def __str__(self) -> str:
        return (
            f"replicator copy {' '.join(self.args)} -> {self.exit_code}\n"
            f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-4000:]}"
        )


def run_copy(
    *args: str,
    json_output: bool = True,
    timeout: float = COPY_TIMEOUT_SECONDS,
    env: Mapping[str, str] | None = None,
) -> CopyRun:
    """`python -m replicator copy ARGS [--json]` from the project root (in `env`, else this
    process's environment)."""
    full = (*args, "--json") if json_output else args
    result = subprocess.run(
        [sys.executable, "-m", "replicator", "copy", *full],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
        env=env,
    )
    return CopyRun(full, result.returncode, result.stdout, result.stderr)


def copy_ok(*args: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run a copy that must succeed; return its summary."""
    run = run_copy(*args, env=env)
    assert run.exit_code == 0, str(run)
    summary = run.summary
    assert summary["failures"] == [], str(run)
    return summary


def assert_tags_equal(
    destination_repo: str,
    expected: dict[str, str],
    *,
    creds: tuple[str, str] | None = None,
) -> None:
    """Every tag -> digest of expected is served by `host/repo` (checked with skopeo)."""
    for tag, digest in expected.items():
        assert skopeo.digest_of(f"{destination_repo}:{tag}", creds=creds) == digest, tag


def assert_digests_present(
    destination_repo: str, digests: tuple[str, ...], *, creds: tuple[str, str] | None = None
) -> None:
    """Every manifest digest is served by `host/repo@digest` with those exact bytes."""
    for digest in digests:
        assert skopeo.digest_of(f"{destination_repo}@{digest}", creds=creds) == digest
