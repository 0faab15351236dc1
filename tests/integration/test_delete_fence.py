"""A delete is never overtaken by its own earlier copy: a delete job waits, unclaimed, while a
copy of the manifest or tag it removes is in flight to its destination (the history checker's
class a: the copy's manifest PUT, retried through an outage, landed after the delete's job had
found nothing to delete, and the deleted image stayed at the destination for good).

The journal's claim against the domain's rule (domain.jobs.deletes.waits_for_copy) on SQLite and
PostgreSQL; then end to end: a copy's manifest PUT held at the destination (a fault proxy)
while the image is deleted at the source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from replicator.domain.jobs import JobKey, JobKind, JobState
from replicator.domain.jobs.deletes import waits_for_copy
from replicator.domain.jobs.ends import Completed
from replicator.journal import Journal
from tests.integration.test_source_state import (
    REPLICATED_WITHIN_SECONDS,
    build,
    jobs_of,
    push,
    wait_jobs_finished,
)
from tests.support.daemon import (
    DESTINATIONS,
    USW2,
    Stack,
    manifest_digest,
    wait_for,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import Fault, requests
from tests.support.images import OCILayout
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.stack_fixtures import proxied_stack
from tests.unit.test_deletes import FENCES

pytestmark = pytest.mark.integration

# How long the fault proxy holds the copy's manifest PUT at usw2 (after the copy asked the
# source a last time): the delete at the source, its event and its job take well under a
# second here, so without the fence the delete's job ran, and ended, within this.
STALL_SECONDS = 5.0


async def test_claim_follows_the_rule(journal: Journal) -> None:
    """A delete is claimed only once no copy in flight to its destination and repository puts
    its manifest or tag (as domain.jobs.deletes.waits_for_copy says, for every row of its table);
    a copy elsewhere (another destination, another repository) never holds it back, and a
    held delete is not reported due (the runner would poll the journal in a loop)."""
    for number, (delete_digest, delete_tag, copy_digest, copy_tag, _) in enumerate(FENCES):
        repository = f"fence/{number}"
        copy = JobKey("use1", repository, copy_digest, copy_tag, "usw2")
        elsewhere = [
            JobKey("use1", repository, copy_digest, copy_tag, "euw1"),
            JobKey("use1", f"{repository}-other", copy_digest, copy_tag, "usw2"),
        ]
        await journal.add_jobs([copy, *elsewhere])
        working = await journal.claim_due(10, datetime.now(UTC))
        assert {row.key.image for row in working} == {copy, *elsewhere}
        delete = JobKey("use1", repository, delete_digest, delete_tag, "usw2", JobKind.DELETE)
        await journal.add_jobs([delete])
        waits = waits_for_copy(
            delete_digest=delete_digest, delete_tag=delete_tag,
            copy_digest=copy_digest, copy_tag=copy_tag,
        )  # fmt: skip
        claimed = await journal.claim_due(10, datetime.now(UTC))
        assert bool(claimed) is not waits, (number, claimed)
        if waits:
            assert await journal.next_due_at() is None
            first = next(row for row in working if row.key.image == copy)
            await journal.end(
                first.id,
                Completed(),
                claimed_at=first.started_at,
            )
            claimed = await journal.claim_due(10, datetime.now(UTC))
        assert [row.key.image for row in claimed] == [delete]
        for row in [*claimed, *working]:
            if row.key.image != copy or not waits:
                await journal.end(
                    row.id,
                    Completed(),
                    claimed_at=row.started_at,
                )
    states = {row.state for row in await journal.jobs(limit=1000)}
    assert states == {JobState.COMPLETE}


@dataclass
class Fenced:
    """use1 (webhooks to the bridge) -> usw2 (behind a fault proxy) and euw1, deletes
    replicated."""

    stack: Stack
    proxy: FaultProxy


@pytest.fixture(scope="module")
def fenced(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fenced]:
    """The stack, its daemon reading usw2 through the proxy, delete replication on."""
    with proxied_stack(
        tmp_path_factory.mktemp("fenced"),
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        behind=USW2,
    ) as (stack, proxy):
        yield Fenced(stack, proxy)


@pytest.mark.slow
def test_delete_during_a_copys_manifest_put_stays_deleted(
    fenced: Fenced, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An image deleted at the source while its copy's manifest PUT to usw2 is held up (after
    the copy asked the source a last time) is gone from both destinations at the end: usw2's
    delete job waits for the copy to end, then deletes what it put."""
    stack, repository = fenced.stack, "prod/fenced"
    layout = OCILayout(tmp_path_factory.mktemp("fenced-layout"))
    image = build(layout, "fenced", seed=50)
    put = requests("PUT", rf"^/v2/{repository}/manifests/")
    held = fenced.proxy.add(Fault.stall(put, STALL_SECONDS, times=1))
    try:
        push(stack, layout, "fenced", f"{repository}:v1")
        wait_for(
            lambda: held.injected > 0, timeout=REPLICATED_WITHIN_SECONDS,
            what="the copy's manifest PUT held at usw2",
        )  # fmt: skip
        url = f"{stack.source.url}/v2/{repository}/manifests/{image.digest}"
        assert httpx.delete(url).status_code == httpx.codes.ACCEPTED
        wait_for(
            lambda: len(jobs_of(stack, repository, JobKind.DELETE)) >= len(DESTINATIONS),
            timeout=REPLICATED_WITHIN_SECONDS, what="the delete's jobs",
        )  # fmt: skip
        deletes = wait_jobs_finished(stack, repository, len(DESTINATIONS), JobKind.DELETE)
        copies = wait_jobs_finished(stack, repository, len(DESTINATIONS))
    finally:
        fenced.proxy.clear()
    for destination in DESTINATIONS:
        registry = stack.registries[destination].url
        assert manifest_digest(registry, repository, image.digest) is None, destination
    copy = next(row for row in copies if row.destination == USW2)
    assert copy.state is JobState.COMPLETE  # it put the image: the delete must follow it
    for row in deletes:
        assert row.state is JobState.COMPLETE, row
        if row.destination == USW2:
            assert copy.finished_at is not None
            assert row.started_at is not None
            assert row.started_at >= copy.finished_at, (row, copy)
