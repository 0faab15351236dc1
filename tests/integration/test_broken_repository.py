"""A broken repository at a destination is not the destination down, end to end.

docker-registry killed while writing a blob's link file leaves it empty, and from then on
answers 500 for that blob in that repository while serving everything else (GET /v2/
included). A 500 from a destination used to mark it unreachable: every job to it held, then
released by the next probe (GET /v2/ answers), then held again by the same blob."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from replicator.domain.jobs import TERMINAL_STATES, JobState
from replicator.journal import JobRow
from tests.support.daemon import (
    USW2,
    JournalReader,
    Stack,
    manifest_digest,
    push_images,
    wait_for,
)
from tests.support.images import BuiltImage, OCILayout
from tests.support.scenarios import record_figures
from tests.support.stack_fixtures import StackFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKEN = "prod/broken"
HEALTHY = "prod/healthy"
HTTP_INTERNAL_ERROR = 500
# Two attempts: the job on the broken blob ends FAILED within seconds (one backoff).
MAX_ATTEMPTS = 2
# A push lands in well under a second; a failing job's two attempts take a few seconds; 60 s
# covers a loaded 2-core machine.
FINISHED_WITHIN_SECONDS = 60.0


@pytest.fixture
def stack(stack_factory: StackFactory) -> Stack:
    """A fresh stack per test, jobs given MAX_ATTEMPTS attempts."""
    return stack_factory(max_attempts=MAX_ATTEMPTS)


def images(folder: Path) -> tuple[BuiltImage, BuiltImage]:
    """Two images sharing one base layer, each with a layer of its own."""
    v0, v1 = OCILayout(folder).siblings("v", 2, first_seed=100)
    return v0, v1


def finished(stack: Stack, repository: str, tag: str) -> JobRow:
    """The job of repository:tag to usw2, once it ended."""
    row: JobRow | None = None

    def ended() -> bool:
        nonlocal row
        rows = JournalReader(stack.settings.journal_url).jobs()
        row = next(
            (
                r
                for r in rows
                if (r.repository, r.tag, r.destination) == (repository, tag, USW2)
                and r.state in TERMINAL_STATES
            ),
            None,
        )
        return row is not None

    wait_for(ended, timeout=FINISHED_WITHIN_SECONDS, what=f"{repository}:{tag} -> usw2")
    assert row is not None
    return row


def test_a_500_for_one_repositorys_blob_holds_no_other_job(stack: Stack, tmp_path: Path) -> None:
    """usw2 answering 500 for good for one blob of prod/broken (its link file emptied) while
    GET /v2/ answers: usw2 is never marked unreachable, prod/broken's job fails on its own, and
    a push to another repository lands at usw2 meanwhile."""
    layout = tmp_path / "layout"
    v0, _ = images(layout)
    usw2 = stack.registries[USW2]
    push_images(layout, stack.source.url, [(BROKEN, "v0")])
    assert finished(stack, BROKEN, "v0").state is JobState.COMPLETE
    base = v0.layer_digests[0].removeprefix("sha256:")
    link = usw2.root / f"docker/registry/v2/repositories/{BROKEN}/_layers/sha256/{base}/link"
    link.write_text("")
    answer = httpx.head(f"{usw2.url}/v2/{BROKEN}/blobs/sha256:{base}", timeout=10.0)
    assert answer.status_code == HTTP_INTERNAL_ERROR  # what the test is about
    started = time.monotonic()
    push_images(layout, stack.source.url, [(BROKEN, "v1"), (HEALTHY, "v0")])
    healthy = finished(stack, HEALTHY, "v0")
    healthy_seconds = time.monotonic() - started
    broken = finished(stack, BROKEN, "v1")
    warnings = [
        line["event"]
        for line in stack.daemon.logs()
        if line.get("level") == "warning" and line.get("destination") == USW2
    ]
    record_figures(
        "broken_repository",
        {
            "healthy_landed_seconds": round(healthy_seconds, 2),
            "broken_job": f"{broken.state.value} {broken.failure_code}",
            "warnings": warnings,
        },
    )
    assert "destination_unreachable" not in warnings, warnings
    assert healthy.state is JobState.COMPLETE
    assert manifest_digest(usw2.url, HEALTHY, "v0") == v0.digest
    assert broken.state is JobState.FAILED, broken


def test_a_tag_link_left_empty_is_rewritten_by_the_next_push(stack: Stack, tmp_path: Path) -> None:
    """usw2 answering 500 for good for prod/broken:v0 (its tag link emptied, as docker-registry
    killed while writing it leaves it) while it holds the image: the next push of v0 at the
    source lands there, the job COMPLETE, and usw2 serves v0 again — the HEAD it cannot answer
    is planned as "not there" and the manifest PUT rewrites the link (bench seed 4029)."""
    layout = tmp_path / "layout"
    v0, _ = images(layout)
    usw2 = stack.registries[USW2]
    push_images(layout, stack.source.url, [(BROKEN, "v0")])
    assert finished(stack, BROKEN, "v0").state is JobState.COMPLETE
    tags = usw2.root / f"docker/registry/v2/repositories/{BROKEN}/_manifests/tags"
    (tags / "v0/current/link").write_text("")
    answer = httpx.head(f"{usw2.url}/v2/{BROKEN}/manifests/v0", timeout=10.0)
    assert answer.status_code == HTTP_INTERNAL_ERROR  # what the test is about
    push_images(layout, stack.source.url, [(BROKEN, "v0")])  # the same image: a new event

    def second_job_ended() -> bool:
        rows = [
            r
            for r in JournalReader(stack.settings.journal_url).jobs()
            if (r.repository, r.tag, r.destination) == (BROKEN, "v0", USW2)
        ]
        return len(rows) == 2 and all(r.state in TERMINAL_STATES for r in rows)

    wait_for(second_job_ended, timeout=FINISHED_WITHIN_SECONDS, what="the second v0 -> usw2")
    rows = [
        r
        for r in JournalReader(stack.settings.journal_url).jobs()
        if (r.repository, r.tag, r.destination) == (BROKEN, "v0", USW2)
    ]
    assert [r.state for r in rows] == [JobState.COMPLETE] * 2, rows
    assert manifest_digest(usw2.url, BROKEN, "v0") == v0.digest
