"""Active-active A <-> B end to end (real docker-registry x2, mosquitto, the bridge, one daemon):
a replica is not a new push (its echo makes no job back, a delete issued as the replica lands
stays deleted), and a reconcile pass never undoes a fresh push."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from replicator.config.loading import load_config
from replicator.config.sites import sites_of
from replicator.domain.images.media import MANIFEST_ACCEPT
from replicator.domain.jobs import JobKind, JobState
from replicator.domain.routing import returning_routes
from replicator.journal.claimers import open_journal
from replicator.journal.retention import Pruned
from tests.support.active_active import A, B, Pair, start_pair
from tests.support.daemon import metric_value, replicator_command, wait_for
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import LayerSpec
from tests.support.layout_push import LayoutPusher
from tests.support.mqtt_fixtures import MosquittoFactory
from tests.support.registry_fixtures import RegistryFactory
from tests.support.scenarios import record_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A push reaches the other side in well under a second; 30 s covers a loaded CI machine.
REPLICATED_WITHIN_SECONDS = 30.0
# How often the delete trial looks for the replica at B: fast next to a replica's echo, which
# needs the registry's notification, the bridge, the broker and the daemon's intake.
LANDING_POLL_SECONDS = 0.005
# Delays between the replica landing at B and the delete at A, one trial each: the echo's job
# back (before it was recognised) ran somewhere in the first few hundred milliseconds, and the
# image came back when the delete fell between its look at A and its copy.
DELETE_DELAYS_SECONDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)
# Tags pushed again at A while reconcile passes run back to back (the issue lost 15-17 of 60).
FRESH_PUSHES = 20
# Reconcile back to back, as in the worst run.
RECONCILE_INTERVAL_SECONDS = 0.5
# A command-line reconcile pass over the pair's few repositories takes a few seconds; this
# bounds a stuck one.
RECONCILE_TIMEOUT_SECONDS = 60.0
# Rows one prune may delete: more than a test's whole journal.
PRUNE_ALL_ROWS = 100_000
# A manifest GET at a local registry answers in milliseconds.
HTTP_TIMEOUT_SECONDS = 10.0


@pytest.fixture
def pair(
    tmp_path: Path, registry_factory: RegistryFactory, mosquitto_factory: MosquittoFactory
) -> Iterator[Pair]:
    """A <-> B, delete replication on both ways, reconcile off."""
    started = start_pair(
        tmp_path / "pair", mosquitto_factory(), lambda url: registry_factory(notifications_url=url)
    )
    yield started
    started.stop()


@pytest.fixture
def reconciled_pair(
    tmp_path: Path, registry_factory: RegistryFactory, mosquitto_factory: MosquittoFactory
) -> Iterator[Pair]:
    """A <-> B with reconcile passes back to back."""
    started = start_pair(
        tmp_path / "pair",
        mosquitto_factory(),
        lambda url: registry_factory(notifications_url=url),
        reconcile_interval=RECONCILE_INTERVAL_SECONDS,
    )
    yield started
    started.stop()


class TestEchoes:
    def test_a_replica_makes_no_job_back(self, pair: Pair) -> None:
        """Pushes at A and at B (images and a two-platform index) each make one job, to the
        other side; the replicas' own events are recorded as echoes and make none back."""
        pushed = {(A, f"from-a/app{i}", "v1") for i in range(4)}
        pushed |= {(B, f"from-b/app{i}", "v1") for i in range(2)}
        digests = {(r, t): pair.push(name, r, t) for name, r, t in sorted(pushed)}
        index = pair.layout.multi_platform("multi", [LayerSpec(7, 2048), LayerSpec(8, 2048)])
        pusher = LayoutPusher(pair.layout.path, pair.url(A), "from-a/multi")
        try:
            pusher.push_tag("multi", as_tag="v1")
        finally:
            pusher.close()
        digests[("from-a/multi", "v1")] = index.digest
        for (repository, tag), digest in digests.items():
            other = B if repository.startswith("from-a") else A
            wait_for(
                lambda r=repository, t=tag, d=digest, o=other: pair.digest(o, r, t) == d,
                timeout=REPLICATED_WITHIN_SECONDS,
                what=f"{repository}:{tag} at {other}",
            )
        jobs = pair.wait_quiet()
        back = [j for j in jobs if (j.source == B) == j.repository.startswith("from-a")]
        tagged_forward = [j for j in jobs if j.tag and j not in back]
        echoes = [e for e in pair.events() if e.outcome == "echo"]
        record_figures(
            "active_active_echoes",
            {
                "pushes": len(digests),
                "jobs": len(jobs),
                "jobs_back": len(back),
                "wasted_jobs_per_push": round(len(back) / len(digests), 2),
                "echo_events": len(echoes),
            },
        )
        assert back == [], sorted(f"{j.source}->{j.destination} {j.repository}" for j in back)
        assert sorted((j.repository, j.state) for j in tagged_forward) == sorted(
            (repository, JobState.COMPLETE) for repository, _ in digests
        )
        # One echo at least per replicated push (an index's children echo too).
        assert len(echoes) >= len(digests)
        metrics = pair.daemon.metrics()
        assert metric_value(metrics, "replicator_events_total", outcome="echo") >= len(digests)

    def test_a_delete_as_the_replica_lands_stays_deleted(self, pair: Pair) -> None:
        """A delete at A issued as the replica lands at B (0 to 600 ms after) is replicated to
        B and the image is never copied back: gone from both sides in every trial."""
        trials: list[tuple[str, str]] = []
        for trial, delay in enumerate(DELETE_DELAYS_SECONDS):
            repository = f"del/app{trial}"
            digest = pair.push(A, repository, "v1")
            deadline = time.monotonic() + REPLICATED_WITHIN_SECONDS
            while pair.digest(B, repository, digest) is None:
                assert time.monotonic() < deadline, f"{repository} never reached B"
                time.sleep(LANDING_POLL_SECONDS)
            time.sleep(delay)
            pair.delete(A, repository, digest)
            trials.append((repository, digest))
        jobs = pair.wait_quiet()
        resurrected = [
            (repository, side)
            for repository, digest in trials
            for side in (A, B)
            if pair.digest(side, repository, digest) is not None
        ]
        record_figures(
            "active_active_delete",
            {
                "trials": len(trials),
                "trials_resurrected": len({r for r, _ in resurrected}),
                "jobs": len(jobs),
                "jobs_back": sum(1 for j in jobs if j.source == B),
            },
        )
        assert resurrected == []
        assert [j for j in jobs if j.source == B] == []


class TestReconcileAgainstFreshPushes:
    def test_reconcile_never_undoes_a_fresh_push(self, reconciled_pair: Pair) -> None:
        """Tags pushed again at A while B -> A and A -> B reconcile passes run back to back all
        end on the fresh push's digest at both sides."""
        pair = reconciled_pair
        repository = "rc/app"
        for i in range(FRESH_PUSHES):
            pair.push(A, repository, f"t{i}")
        pair.wait_quiet()
        fresh = {f"t{i}": pair.push(A, repository, f"t{i}") for i in range(FRESH_PUSHES)}
        jobs = pair.wait_quiet()
        lost = sorted(
            tag
            for tag, digest in fresh.items()
            if pair.digest(A, repository, tag) != digest
            or pair.digest(B, repository, tag) != digest
        )
        superseded = [j for j in jobs if j.state is JobState.SUPERSEDED and j.source == A]
        record_figures(
            "active_active_reconcile",
            {
                "fresh_pushes": len(fresh),
                "lost_pushes": len(lost),
                "superseded_jobs": len(superseded),
            },
        )
        assert lost == []


class TestPastTheRetention:
    def test_a_fresh_push_of_a_tag_replicated_before_the_retention_is_not_undone(
        self, pair: Pair
    ) -> None:
        """v1 = X pushed at A and replicated to B, then the journal pruned as `retention_days`
        does a month later; v1 = Y pushed at A while the bridge is down (the event waits at the
        registry) and a B -> A reconcile pass runs: it leaves A's fresh Y alone (the newest job
        of each tag and route outlives the retention), and once the event arrives both sides
        end on Y."""
        repository = "retained/app"
        old = pair.push(A, repository, "v1")
        wait_for(
            lambda: pair.digest(B, repository, "v1") == old,
            timeout=REPLICATED_WITHIN_SECONDS, what="v1 at B",
        )  # fmt: skip
        pair.wait_quiet()
        assert _prune_all(pair.journal.url, pair.config).jobs_examined > 0  # v1's copy is old
        pair.bridge.stop()
        fresh = pair.push(A, repository, "v1")
        _reconcile_pass(pair, options=("--source", B))
        assert pair.digest(A, repository, "v1") == fresh, "the pass undid A's fresh push"
        pair.bridge.start()
        pair.wait_quiet()
        assert {side: pair.digest(side, repository, "v1") for side in (A, B)} == {
            A: fresh, B: fresh,
        }  # fmt: skip


class TestDeleteWhileTheDaemonIsDown:
    @pytest.mark.parametrize("others", [True, False], ids=["other-tag-stays", "last-tag"])
    def test_reconcile_before_the_delete_event_keeps_the_delete(
        self, pair: Pair, others: bool
    ) -> None:
        """A tag pushed at B and replicated to A is deleted at B while the daemon is down (its
        event waits in the broker); a reconcile pass run before the daemon is back does not
        copy A's replica back to B, and once the daemon is back the delete reaches A: the
        image is gone from both sides, another tag stays — also when the deleted tag was the
        repository's last at B (B then lists none, and knows the repository still: history
        checker seeds 111, 165, 191)."""
        repository = "late/app"
        deleted = pair.push(B, repository, "v1")
        kept = pair.push(B, repository, "v2") if others else None
        for digest in (deleted, kept):
            if digest is None:
                continue
            wait_for(
                lambda digest=digest: pair.digest(A, repository, digest) is not None,
                timeout=REPLICATED_WITHIN_SECONDS, what=f"{digest} at A",
            )  # fmt: skip
        pair.wait_quiet()
        pair.daemon.kill()
        pair.delete(B, repository, deleted)
        _reconcile_pass(pair)
        pair.daemon.start()
        jobs = pair.wait_quiet()
        assert {side: pair.digest(side, repository, deleted) for side in (A, B)} == {
            A: None, B: None,
        }  # fmt: skip
        assert {side: pair.digest(side, repository, "v2") for side in (A, B)} == {
            A: kept, B: kept,
        }  # fmt: skip
        refused = [j for j in jobs if j.failure_code == "DELETE_REFUSED"]
        assert refused == []


class TestLostDelete:
    @pytest.mark.parametrize("others", [True, False], ids=["other-tag-stays", "last-tag"])
    def test_a_delete_whose_event_is_lost_is_replicated_by_reconcile(
        self, pair: Pair, others: bool
    ) -> None:
        """A tag pushed at A and replicated to B is deleted at A while the bridge is down, and A
        restarts before it can deliver the event (distribution keeps its notification queue in
        memory: the event is lost for good); a reconcile pass then replicates the delete: the
        image is gone from both sides, another tag stays, and no delete is refused (the
        history checker's active-active seed 4025)."""
        repository = "lost/app"
        deleted = pair.push(A, repository, "v1")
        kept = pair.push(A, repository, "v2") if others else None
        for digest in (deleted, kept):
            if digest is not None:
                wait_for(
                    lambda digest=digest: pair.digest(B, repository, digest) is not None,
                    timeout=REPLICATED_WITHIN_SECONDS, what=f"{digest} at B",
                )  # fmt: skip
        pair.wait_quiet()
        _delete_losing_its_event(pair, A, repository, deleted)
        _reconcile_pass(pair)
        jobs = pair.wait_quiet()
        assert {side: pair.digest(side, repository, deleted) for side in (A, B)} == {
            A: None, B: None,
        }  # fmt: skip
        assert {side: pair.digest(side, repository, "v1") for side in (A, B)} == {
            A: None, B: None,
        }  # fmt: skip
        assert {side: pair.digest(side, repository, "v2") for side in (A, B)} == {
            A: kept, B: kept,
        }  # fmt: skip
        assert [j for j in jobs if j.failure_code == "DELETE_REFUSED"] == []

    def test_a_second_lost_delete_of_a_restored_image_is_replayed_too(self, pair: Pair) -> None:
        """v1 = X pushed at A, replicated, deleted with its event lost (A restarts with it queued)
        and replayed by a reconcile pass; the user pushes X again as v1, it is replicated, and
        its second delete is lost the same way: the next pass replays that delete too — v1 and X
        gone from both sides (the first replay's delete jobs, done long before the re-push,
        neither hold the second nor stand in for it)."""
        repository = "relost/app"
        image = pair.push(A, repository, "v1")
        for attempt in ("first", "second"):
            if attempt == "second":
                pair.push_again(A, repository, "v1", image)
            wait_for(
                lambda: pair.digest(B, repository, "v1") == image,
                timeout=REPLICATED_WITHIN_SECONDS, what=f"v1 at B ({attempt} push)",
            )  # fmt: skip
            pair.wait_quiet()
            _delete_losing_its_event(pair, A, repository, image)
            _reconcile_pass(pair)
            jobs = pair.wait_quiet()
            assert {side: pair.digest(side, repository, "v1") for side in (A, B)} == {
                A: None, B: None,
            }, f"after the {attempt} lost delete"  # fmt: skip
            assert pair.digest(B, repository, image) is None, f"after the {attempt} lost delete"
        assert [j for j in jobs if j.failure_code == "DELETE_REFUSED"] == []

    def test_a_lost_delete_of_an_image_left_untagged_is_replayed(
        self, reconciled_pair: Pair
    ) -> None:
        """v1 = X pushed at B and replicated to A, then v1 = Y (X left untagged at both sides,
        served by digest); X deleted at B while the bridge is down and B restarted before
        delivering the event (lost for good): every tag agrees, and the daemon's reconcile
        still removes X from A (history checker seed 9035)."""
        pair = reconciled_pair
        repository = "untagged/app"
        pushed: list[str] = []
        for _ in range(2):  # the second push only once the first is replicated
            pushed.append(pair.push(B, repository, "v1"))
            wait_for(
                lambda: pair.digest(A, repository, "v1") == pushed[-1],
                timeout=REPLICATED_WITHIN_SECONDS, what=f"v1 = {pushed[-1]} at A",
            )  # fmt: skip
        first, second = pushed
        pair.wait_quiet()
        assert pair.digest(A, repository, first) == first  # untagged, served by digest
        _delete_losing_its_event(pair, B, repository, first)
        wait_for(
            lambda: pair.digest(A, repository, first) is None,
            timeout=REPLICATED_WITHIN_SECONDS, what=f"{first} gone from A",
        )  # fmt: skip
        assert pair.digest(A, repository, "v1") == second == pair.digest(B, repository, "v1")

    def test_a_lost_delete_of_a_retagged_image_removes_the_tag(self, pair: Pair) -> None:
        """v1 = X pushed at A and replicated to B; while the bridge is down v1 is pushed again
        (Y) and Y deleted at A, which restarts before delivering either event (lost for good):
        A keeps X untagged and no v1. A reconcile pass replays the tag's delete at B — v1 gone
        from both sides — and nothing is refused (history checker seed 4659)."""
        repository = "retagged/app"
        first = pair.push(A, repository, "v1")
        wait_for(
            lambda: pair.digest(B, repository, "v1") == first,
            timeout=REPLICATED_WITHIN_SECONDS, what="v1 at B",
        )  # fmt: skip
        pair.wait_quiet()
        pair.bridge.stop()
        second = pair.push(A, repository, "v1")
        _delete_losing_its_event(pair, A, repository, second, bridge_down=True)
        _reconcile_pass(pair)
        jobs = pair.wait_quiet()
        assert pair.digest(A, repository, first) == first  # kept untagged at A
        assert {side: pair.digest(side, repository, "v1") for side in (A, B)} == {
            A: None, B: None,
        }  # fmt: skip
        assert [j for j in jobs if j.failure_code == "DELETE_REFUSED"] == []

    def test_a_registry_restored_from_an_older_backup_keeps_the_other_sides_copy(
        self, pair: Pair
    ) -> None:
        """A is restored from a backup older than v1 (v1's tag, manifest and blob links gone
        from its storage, as the backup never had them) while B holds v1's replica: a reconcile
        pass does not take that for a lost delete — B keeps v1, the only copy left, and no
        delete job is journalled (a delete leaves the image's blobs at A; a restore does not)."""
        repository = "restored/app"
        lost, _ = _restored_without_v1(pair, repository)
        _reconcile_pass(pair)
        jobs = pair.wait_quiet()
        assert pair.digest(A, repository, lost) is None  # the restore, as made
        assert {side: pair.digest(side, repository, "v1") for side in (A, B)} == {
            A: None, B: lost,
        }  # fmt: skip
        assert [j for j in jobs if j.kind is JobKind.DELETE and j.repository == repository] == []

    @pytest.mark.parametrize("lie", ["every-blob-200", "other-image-by-digest"])
    def test_an_origin_that_lies_about_the_image_never_costs_the_only_copy(
        self, pair: Pair, lie: str
    ) -> None:
        """A is restored from a backup older than v1 (as above) and the reconcile pass reaches A
        through a proxy that lies: it answers 200 to every blob HEAD and GET (parts A does not
        hold), or serves v2's manifest when asked for v1's digest (an image A does not hold).
        Neither lie makes the pass delete B's v1, the only copy left: no delete job is
        journalled."""
        repository = "liar/app"
        lost, kept = _restored_without_v1(pair, repository)
        registry = pair.registries[A]
        other = httpx.get(
            f"{registry.url}/v2/{repository}/manifests/{kept}",
            headers={"Accept": MANIFEST_ACCEPT}, timeout=HTTP_TIMEOUT_SECONDS,
        )  # fmt: skip
        proxy = FaultProxy(registry.url).start()
        try:
            if lie == "every-blob-200":
                lying = Fault.status_code(200, requests(None, r"/blobs/sha256:"), times=None)
            else:
                served = other.headers["content-type"]
                lying = Fault.serve_body(
                    requests(None, f"/manifests/{lost}$"), other.content, content_type=served
                )
            proxy.add(lying)
            config = pair.folder / "through-proxy.toml"
            config.write_text(pair.config.read_text().replace(registry.url, proxy.url))
            _reconcile_pass(pair, config)
            assert lying.injected > 0, "the pass never asked A what the lie answers"
        finally:
            proxy.stop()
        jobs = pair.wait_quiet()
        assert {side: pair.digest(side, repository, "v1") for side in (A, B)} == {
            A: None, B: lost,
        }  # fmt: skip
        assert [j for j in jobs if j.kind is JobKind.DELETE and j.repository == repository] == []


def _restored_without_v1(pair: Pair, repository: str) -> tuple[str, str]:
    """v1 and v2 pushed at A and replicated to B, then A's storage put back as a backup without
    v1 would have it (`_forget_image`); returns (v1's digest, v2's digest)."""
    lost = pair.push(A, repository, "v1")
    kept = pair.push(A, repository, "v2")
    for digest in (lost, kept):
        wait_for(
            lambda digest=digest: pair.digest(B, repository, digest) is not None,
            timeout=REPLICATED_WITHIN_SECONDS, what=f"{digest} at B",
        )  # fmt: skip
    pair.wait_quiet()
    registry = pair.registries[A]
    registry.stop()
    _forget_image(registry.root, repository, "v1", lost, keep=kept)
    registry.start()
    return lost, kept


def _forget_image(root: Path, repository: str, tag: str, digest: str, *, keep: str) -> None:
    """Remove from a stopped docker-registry's storage what a backup taken before `digest` was
    pushed lacks: its tag, its manifest revision and the links of its blobs that `keep` (an
    image the backup has) does not share."""
    repo = root / "docker/registry/v2/repositories" / repository
    blob_data = root / "docker/registry/v2/blobs/sha256"

    def parts(image: str) -> set[str]:
        hexa = image.removeprefix("sha256:")
        document = json.loads((blob_data / hexa[:2] / hexa / "data").read_bytes())
        return {d["digest"] for d in [document["config"], *document["layers"]]}

    shutil.rmtree(repo / "_manifests/tags" / tag)
    shutil.rmtree(repo / "_manifests/revisions/sha256" / digest.removeprefix("sha256:"))
    for blob in parts(digest) - parts(keep):
        shutil.rmtree(repo / "_layers/sha256" / blob.removeprefix("sha256:"))


def _delete_losing_its_event(
    pair: Pair, side: str, repository: str, digest: str, *, bridge_down: bool = False
) -> None:
    """Delete `digest` at `side` while the bridge is down (stopped here unless `bridge_down`),
    then restart `side` before it can deliver the event: distribution keeps its notification
    queue in memory, so the event is lost for good."""
    if not bridge_down:
        pair.bridge.stop()
    pair.delete(side, repository, digest)
    pair.registries[side].restart()
    pair.bridge.start()


def _prune_all(journal_url: str, config: Path) -> Pruned:
    """Prune every finished job and event, as the daemon's retention does (for `config`'s
    routes) once they are older than `journal.retention_days`."""

    async def prune() -> Pruned:
        async with await open_journal(journal_url) as journal:
            return await journal.prune(
                datetime.now(UTC) + timedelta(days=1), PRUNE_ALL_ROWS, returning=returning
            )

    returning = returning_routes(sites_of(load_config(config)))  # as the daemon prunes

    return asyncio.run(prune())


def _reconcile_pass(pair: Pair, config: Path | None = None, options: tuple[str, ...] = ()) -> None:
    """One CLI reconcile pass (`backfill` with `options`) over the pair's config (or `config`),
    which must exit 0."""
    command = replicator_command("backfill", "--config", str(config or pair.config), *options)
    reconciled = subprocess.run(
        command, capture_output=True, timeout=RECONCILE_TIMEOUT_SECONDS, check=False
    )
    assert reconciled.returncode == 0, reconciled.stderr.decode()[-2000:]
