"""`replicator status`, `jobs` and `retry` against a real config and a SQLite journal."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from replicator.cli import main
from replicator.cli.jobs import render_table
from replicator.domain.jobs import JobKey, JobKind, JobState
from replicator.domain.jobs.ends import Completed, CopyCounters
from replicator.journal import JobRow
from replicator.journal.claimers import open_journal
from replicator.journal.status import status_document
from tests.support.journal_fixtures import pushed

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "c" * 64
TO_USW2 = JobKey("use1", "app", DIGEST, "v1", "usw2")
TO_EUW1 = JobKey("use1", "app", DIGEST, "v1", "euw1")
DENIED_REASON = "no Allow statement for ecr:ReplicateImage"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


# The fields of a job in `jobs --json` (README "JSON output"); `claimed_by` is not one of them.
JOB_FIELDS = {
    "id", "kind", "state", "source", "repository", "tag", "digest", "destination", "attempts",
    "failure", "bytes_copied", "blobs_copied", "blobs_mounted", "blobs_skipped", "pushed_at",
    "created_at", "updated_at", "started_at", "finished_at", "next_attempt_at",
}  # fmt: skip


@dataclass(frozen=True)
class Setup:
    """A config file and the ids of its journal's jobs."""

    config: Path
    complete_id: int
    failed_id: int


def _config_text(journal: Path) -> str:
    return f"""
version = 1

[journal]
url = "sqlite:///{journal}"

[registries.use1]
account = "111122223333"
region = "us-east-1"
url = "http://127.0.0.1:5001"

[registries.usw2]
account = "111122223333"
region = "us-west-2"
url = "http://127.0.0.1:5002"

[registries.euw1]
account = "444455556666"
region = "eu-west-1"
url = "http://127.0.0.1:5003"
"""


async def _fill(url: str) -> tuple[int, int]:
    async with await open_journal(url) as journal:
        complete_id, failed_id = await journal.record_event(
            pushed(b"push", [TO_USW2], pushed_at=NOW, denied={TO_EUW1: DENIED_REASON})
        )
        await journal.claim_due(10, NOW)
        await journal.end(
            complete_id,
            Completed(CopyCounters(bytes_copied=10, blobs_copied=2)),
        )
        return complete_id, failed_id


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    """usw2 has the image COMPLETE, euw1 FAILED by policy."""
    config = tmp_path / "replicator.toml"
    config.write_text(_config_text(tmp_path / "journal.db"))
    complete_id, failed_id = asyncio.run(_fill(f"sqlite:///{tmp_path / 'journal.db'}"))
    return Setup(config, complete_id, failed_id)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI; (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


class TestStatus:
    """replicator status."""

    def test_json_by_tag(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """--json answers as DescribeImageReplicationStatus does, region/account from config."""
        code, out, _ = run(
            capsys,
            "status",
            "--config",
            str(setup.config),
            "--repository",
            "app",
            "--image-tag",
            "v1",
            "--json",
        )
        assert code == 0
        assert json.loads(out) == {
            "schema": 1,
            "command": "status",
            "repositoryName": "app",
            "imageId": {"imageDigest": DIGEST, "imageTag": "v1"},
            "replicationStatuses": [
                {
                    "region": "eu-west-1",
                    "registryId": "444455556666",
                    "registryName": "euw1",
                    "status": "FAILED",
                    "failureCode": "POLICY_DENIED",
                    "failureReason": DENIED_REASON,
                },
                {
                    "region": "us-west-2",
                    "registryId": "111122223333",
                    "registryName": "usw2",
                    "status": "COMPLETE",
                },
            ],
        }

    def test_table_by_digest(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """Without --json a table lists each destination's status and failure."""
        code, out, _ = run(
            capsys,
            "status",
            "--config",
            str(setup.config),
            "--repository",
            "app",
            "--image-digest",
            DIGEST,
            "--source",
            "use1",
        )
        assert code == 0
        lines = out.splitlines()
        assert lines[:3] == ["repository  app", f"digest      {DIGEST}", "tag         v1"]
        assert lines[4].split() == ["DESTINATION", "REGION", "REGISTRY", "ID", "STATUS", "REASON"]
        assert lines[5].split()[:5] == [
            "euw1",
            "eu-west-1",
            "444455556666",
            "FAILED",
            "POLICY_DENIED:",
        ]
        assert lines[6].split() == ["usw2", "us-west-2", "111122223333", "COMPLETE", "-"]

    def test_unknown_image(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """An image the journal does not know exits 1 and says so."""
        code, out, err = run(
            capsys, "status", "--config", str(setup.config), "--repository", "app",
            "--image-tag", "v2",
        )  # fmt: skip
        assert (code, out) == (1, "")
        assert "no replication jobs for app tag v2" in err

    def test_invalid_digest(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """A malformed digest is a usage error (exit 2) naming the value."""
        code, _, err = run(
            capsys, "status", "--config", str(setup.config), "--repository", "app",
            "--image-digest", "sha256:nothex",
        )  # fmt: skip
        assert code == 2
        assert "sha256:nothex" in err

    def test_needs_digest_or_tag(self, setup: Setup) -> None:
        """Giving neither --image-digest nor --image-tag is refused by the parser (exit 2)."""
        assert main(["status", "--config", str(setup.config), "--repository", "app"]) == 2

    def test_missing_config(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A config file that cannot be read exits 2 naming the file."""
        missing = tmp_path / "nope.toml"
        code, _, err = run(
            capsys, "status", "--config", str(missing), "--repository", "app", "--image-tag", "v1"
        )
        assert code == 2
        assert str(missing) in err


class TestJobs:
    """replicator jobs."""

    def test_json_filtered_by_state(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """--state (any case) keeps only jobs in that state; --json is the documented job
        document, without the journal's internal columns."""
        code, out, _ = run(
            capsys, "jobs", "--config", str(setup.config), "--state", "failed", "--json"
        )
        assert code == 0
        document = json.loads(out)
        assert (document["schema"], document["command"]) == (1, "jobs")
        [job] = document["jobs"]
        assert (job["id"], job["state"], job["failure"]["code"], job["destination"]) == (
            setup.failed_id,
            "FAILED",
            "POLICY_DENIED",
            "euw1",
        )
        assert job["pushed_at"] == NOW.isoformat()
        assert set(job) == JOB_FIELDS

    def test_table(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """The table lists the newest job first with a short digest."""
        code, out, _ = run(capsys, "jobs", "--config", str(setup.config))
        assert code == 0
        header, first, second = out.splitlines()
        assert header.split()[:3] == ["ID", "KIND", "STATE"]
        assert first.split()[:5] == [
            str(setup.failed_id),
            "COPY",
            "FAILED",
            "0",
            f"use1/app:v1@sha256:{'c' * 12}",
        ]
        assert second.split()[2] == "COMPLETE"

    def test_cut_at_the_limit_is_said(
        self, setup: Setup, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With more jobs than --limit the table says on stderr that it shows only the newest
        ones and how to see more, and --json says truncated; at the limit it says nothing."""
        code, out, err = run(capsys, "jobs", "--config", str(setup.config), "--limit", "1")
        assert code == 0
        assert len(out.splitlines()) == 2  # the header and one job
        assert "showing the 1 most recent jobs; more match (--limit to see more)" in err
        code, out, _ = run(capsys, "jobs", "--config", str(setup.config), "--limit", "1", "--json")
        document = json.loads(out)
        assert (len(document["jobs"]), document["truncated"]) == (1, True)
        code, out, err = run(capsys, "jobs", "--config", str(setup.config), "--limit", "2")
        assert "more match" not in err
        code, out, _ = run(capsys, "jobs", "--config", str(setup.config), "--limit", "2", "--json")
        assert json.loads(out)["truncated"] is False

    def test_unknown_state(self, setup: Setup) -> None:
        """An unknown --state is refused by the parser (exit 2)."""
        assert main(["jobs", "--config", str(setup.config), "--state", "DONE"]) == 2


class TestRetry:
    """replicator retry."""

    def test_retry_one(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """--job re-queues a failed job as PENDING."""
        code, out, _ = run(
            capsys, "retry", "--config", str(setup.config), "--job", str(setup.failed_id)
        )
        assert (code, out) == (0, f"re-queued job {setup.failed_id}\n")
        code, out, _ = run(
            capsys, "jobs", "--config", str(setup.config), "--state", "PENDING", "--json"
        )
        assert [job["id"] for job in json.loads(out)["jobs"]] == [setup.failed_id]

    def test_retry_not_failed(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """--job on a COMPLETE job exits 1 and says only FAILED jobs are re-queued."""
        code, _, err = run(
            capsys, "retry", "--config", str(setup.config), "--job", str(setup.complete_id)
        )
        assert code == 1
        assert f"job {setup.complete_id} is COMPLETE; only FAILED jobs" in err

    def test_retry_missing(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """--job on an unknown id exits 1 and says it does not exist."""
        code, _, err = run(capsys, "retry", "--config", str(setup.config), "--job", "999")
        assert code == 1
        assert "job 999 does not exist" in err

    def test_retry_all(self, setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
        """--all-failed re-queues every failed job and reports how many."""
        assert run(capsys, "retry", "--config", str(setup.config), "--all-failed")[:2] == (
            0,
            "re-queued 1 failed job\n",
        )
        assert run(capsys, "retry", "--config", str(setup.config), "--all-failed")[:2] == (
            0,
            "re-queued 0 failed jobs\n",
        )


def _row(destination: str, tag: str | None, state: JobState, **extra: object) -> JobRow:
    fields: dict[str, object] = {
        "id": 1, "kind": JobKind.COPY, "source": "use1", "repository": "app", "digest": DIGEST,
        "tag": tag, "destination": destination, "state": state, "attempts": 1,
        "next_attempt_at": None, "failure_code": None, "failure_reason": None,
        "bytes_copied": 0, "blobs_copied": 0, "blobs_mounted": 0, "blobs_skipped": 0,
        "pushed_at": None, "created_at": NOW, "updated_at": NOW, "started_at": None,
        "finished_at": None,
    }  # fmt: skip
    fields.update(extra)
    return JobRow(**fields)  # type: ignore[arg-type]


class TestStatusDocument:
    """status_document(): several jobs of one digest."""

    def test_tags_combine_per_destination(self) -> None:
        """Two tags at one destination show one status, FAILED before IN_PROGRESS."""
        rows = [
            _row("usw2", "v1", JobState.PENDING),
            _row("usw2", "v2", JobState.FAILED, failure_code="NOT_FOUND", failure_reason="gone"),
        ]
        document = status_document("app", rows, {})
        assert document["imageId"] == {"imageDigest": DIGEST}
        assert document["replicationStatuses"] == [
            {
                "region": "",
                "registryId": "",
                "registryName": "usw2",
                "status": "FAILED",
                "failureCode": "NOT_FOUND",
                "failureReason": "gone",
            }
        ]

    @pytest.mark.parametrize(
        ("older", "newer", "shown"),
        [
            (JobState.FAILED, JobState.COMPLETE, "COMPLETE"),
            (JobState.COMPLETE, JobState.FAILED, "FAILED"),
            (JobState.COMPLETE, JobState.PENDING, "IN_PROGRESS"),
        ],
        ids=["pushed-again-after-a-failure", "rollback-failed", "rollback-in-progress"],
    )
    def test_newest_event_speaks_for_an_image(
        self, older: JobState, newer: JobState, shown: str
    ) -> None:
        """Two events' jobs of one image at one destination show the newer job's status: an
        old failure does not hide a later success, nor an old success a later failure."""
        rows = [
            _row("usw2", "v1", older, id=1, origin="e1", failure_code="NOT_FOUND"),
            _row("usw2", "v1", newer, id=2, origin="e3", failure_code="NOT_FOUND"),
        ]
        [entry] = status_document("app", rows, {})["replicationStatuses"]
        assert entry["status"] == shown

    def test_unfinished_states_are_in_progress(self) -> None:
        """PENDING and RETRY_WAIT show as IN_PROGRESS; one tag shows as imageTag."""
        rows = [_row("a", "v1", JobState.PENDING), _row("b", "v1", JobState.RETRY_WAIT)]
        document = status_document("app", rows, {})
        assert document["imageId"] == {"imageDigest": DIGEST, "imageTag": "v1"}
        assert {s["status"] for s in document["replicationStatuses"]} == {"IN_PROGRESS"}


def test_render_table() -> None:
    """Columns are padded to the widest cell, two spaces apart, trailing spaces trimmed."""
    assert render_table(["A", "BB"], [["xxx", "y"], ["z", ""]]) == "A    BB\nxxx  y\nz"
