"""Every `--json` output is the document README "JSON output" describes: schema 1, the command,
snake_case fields (ECR's camelCase only inside `status`), one indentation, errors as documents."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from replicator.domain.jobs import JobKey
from replicator.journal.store import Journal

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "b" * 64
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
# The top-level fields of each document (README "JSON output").
SHAPES = {
    "copy": {"images", "manifests", "blobs_copied", "blobs_mounted", "blobs_skipped",
             "bytes_copied", "seconds", "failures"},
    "jobs": {"jobs", "truncated"},
    "status": {"repositoryName", "imageId", "replicationStatuses"},
    "retry": {"requeued", "job"},
    "config check": {"ok", "file", "version", "registries", "rules", "cycles", "webhooks",
                     "restart_required_for"},
}  # fmt: skip
JOB_FIELDS = {
    "id", "kind", "state", "source", "repository", "tag", "digest", "destination", "attempts",
    "failure", "bytes_copied", "blobs_copied", "blobs_mounted", "blobs_skipped", "pushed_at",
    "created_at", "updated_at", "started_at", "finished_at", "next_attempt_at",
}  # fmt: skip
ERROR_FIELDS = {"schema", "command", "error"}


def replicator(*argv: str) -> subprocess.CompletedProcess[str]:
    """`replicator ARGV...` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "replicator", *argv],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def snake_case_keys(value: Any, path: str = "") -> list[str]:
    """Every object key below `value` that is not snake_case, with where it is."""
    found = []
    if isinstance(value, dict):
        for key, child in value.items():
            if not SNAKE.match(key):
                found.append(f"{path}.{key}")
            found += snake_case_keys(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += snake_case_keys(child, f"{path}[{index}]")
    return found


def parsed(done: subprocess.CompletedProcess[str], command: str) -> dict[str, Any]:
    """The document on stdout, checked for what every document shares."""
    assert done.stdout.startswith('{\n  "schema": 1,\n  "command": '), done.stdout[:80]
    document: dict[str, Any] = json.loads(done.stdout)
    assert document["schema"] == 1
    assert document["command"] == command
    return document


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config of two registries and a journal holding a denied (FAILED) job."""
    url = f"sqlite:///{tmp_path}/journal.db"
    path = tmp_path / "replicator.toml"
    path.write_text(
        f'version = 1\n[journal]\nurl = "{url}"\n'
        '[registries.use1]\naccount = "111122223333"\nregion = "us-east-1"\n'
        'url = "http://127.0.0.1:1"\n'
        '[registries.euw1]\naccount = "444455556666"\nregion = "eu-west-1"\n'
        'url = "http://127.0.0.1:2"\n'
    )

    async def seed() -> None:
        journal = await Journal.open(url, claimer="test")
        key = JobKey("use1", "app", DIGEST, "v1", "euw1")
        await journal.add_jobs([key], pushed_at=datetime.now(UTC), denied={key: "policy says no"})
        await journal.close()

    asyncio.run(seed())
    return path


class TestDocuments:
    def test_jobs(self, config: Path) -> None:
        """`jobs --json`: a `jobs` list of job objects with exactly the documented fields."""
        document = parsed(replicator("jobs", "--json", "--config", str(config)), "jobs")
        assert set(document) - {"schema", "command"} == SHAPES["jobs"]
        [job] = document["jobs"]
        assert set(job) == JOB_FIELDS
        assert job["failure"] == {"code": "POLICY_DENIED", "reason": "policy says no"}
        assert not snake_case_keys(document)

    def test_status_keeps_ecr_shape(self, config: Path) -> None:
        """`status --json`: ECR's camelCase document under schema and command."""
        done = replicator(
            "status", "--repository", "app", "--image-tag", "v1", "--json", "--config", str(config)
        )
        document = parsed(done, "status")
        assert set(document) - {"schema", "command"} == SHAPES["status"]
        assert document["replicationStatuses"][0]["failureCode"] == "POLICY_DENIED"

    def test_retry(self, config: Path) -> None:
        """`retry --json`: how many jobs were re-queued and which one was asked for."""
        done = replicator("retry", "--job", "1", "--json", "--config", str(config))
        document = parsed(done, "retry")
        assert {k: document[k] for k in SHAPES["retry"]} == {"requeued": 1, "job": 1}

    def test_config_check(self, config: Path) -> None:
        """`config check --json`: the documented fields, all snake_case."""
        document = parsed(replicator("config", "check", str(config), "--json"), "config check")
        assert set(document) - {"schema", "command"} == SHAPES["config check"]
        assert not snake_case_keys(document)

    def test_copy_failure(self) -> None:
        """`copy --json` to an unreachable registry: the summary with its failure, exit 1."""
        done = replicator("copy", "127.0.0.1:1/a:v1", "127.0.0.1:1/b:v1", "--json")
        assert done.returncode == 1
        document = parsed(done, "copy")
        assert set(document) - {"schema", "command"} == SHAPES["copy"]
        assert [f["code"] for f in document["failures"]] == ["TRANSPORT_ERROR"]
        assert not snake_case_keys(document)


class TestErrors:
    @pytest.mark.parametrize(
        ("argv", "command", "code", "exit_code"),
        [
            (["jobs", "--json", "--config", "/nonexistent.toml"], "jobs", "CONFIG_INVALID", 2),
            (["copy", "--json", "--bogus", "a/b", "c/d"], "copy", "USAGE", 2),
            (["copy", "--json", "127.0.0.1:1/a@sha256:x", "c.io/d"], "copy", "USAGE", 2),
            (["config", "check", "/nonexistent.toml", "--json"], "config check",
             "CONFIG_INVALID", 2),
        ],
        ids=["config-missing", "unknown-option", "bad-reference", "config-check-missing"],
    )  # fmt: skip
    def test_error_document_with_the_same_exit_code(
        self, argv: list[str], command: str, code: str, exit_code: int
    ) -> None:
        """A failing --json command prints an error document on stdout, exit code unchanged."""
        done = replicator(*argv)
        assert done.returncode == exit_code
        document = parsed(done, command)
        assert set(document) == ERROR_FIELDS
        assert document["error"]["code"] == code
        assert document["error"]["message"]
        assert done.stderr.strip()  # people still read the message on stderr

    def test_status_not_found(self, config: Path) -> None:
        """`status --json` of an unknown image: a NOT_FOUND document, exit 1."""
        done = replicator(
            "status", "--repository", "other", "--image-tag", "v1", "--json", "--config",
            str(config),
        )  # fmt: skip
        assert done.returncode == 1
        assert parsed(done, "status")["error"]["code"] == "NOT_FOUND"

    def test_retry_refused(self, config: Path) -> None:
        """`retry --job N --json` of a job that does not exist: NOT_FOUND, exit 1."""
        done = replicator("retry", "--job", "99", "--json", "--config", str(config))
        assert done.returncode == 1
        assert parsed(done, "retry")["error"]["code"] == "NOT_FOUND"
