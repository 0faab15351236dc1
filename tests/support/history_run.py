"""A history checker's schedule (tests/support/history.py) made to happen against real servers:
docker-registry A and B notifying the bridge, mosquitto, one daemon (`active_active.Pair`), in
one-way (A -> B) or active-active (A <-> B) topology.

Writes are made as a user would (blobs, then the manifest by tag; deletes by digest) and
recorded once the registry answered; a reconcile pass is `replicator backfill` started beside
the daemon (it runs while the schedule goes on, as a cron job's would); a kill is SIGKILL and a
restart; an outage stops a registry, its return starts it on the same port and storage. Then
the daemon is left until quiet, and the final state of every tag and deleted manifest is read
at both registries, with each COMPLETE job's finish as the time its replica landed.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from replicator.domain.jobs import JobKind, JobState
from tests.support.active_active import HTTP_ACCEPTED, A, B, Pair, start_pair
from tests.support.daemon import (
    READY_TIMEOUT_SECONDS,
    manifest_digest,
    replicator_command,
    wait_for,
)
from tests.support.history import (
    DEFAULT_ODDS,
    Arrival,
    Kind,
    Observed,
    Odds,
    Step,
    Verdict,
    Write,
    judge,
    schedule,
)
from tests.support.images import LayerSpec
from tests.support.layout_push import LayoutPusher
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.registry_server import Registry

# Who replicates to whom, and who owns (writes) tags, per topology.
ROUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "one-way": {A: (B,)},
    "active-active": {A: (B,), B: (A,)},
}
OWNERS: dict[str, tuple[str, ...]] = {"one-way": (A,), "active-active": (A, B)}
# Reconcile passes inside the daemon this often: several per schedule, so they run while
# people push (the situation that undid fresh pushes, issue #22).
RECONCILE_INTERVAL_SECONDS = 2.0
# A command-line reconcile pass still running this long after the schedule is killed (one
# stuck on a registry that was down must not hold the check for ever).
RECONCILE_PASS_TIMEOUT_SECONDS = 60.0
# The daemon has everything settled within this on a loaded 2-core machine, outages included
# (a job's retry waits are seconds here).
QUIET_TIMEOUT_SECONDS = 90.0
# A layer of each image: small, the schedule is about order, not bytes.
LAYER_BYTES = 1024


@dataclass
class Run:
    """One schedule run: the steps, the writes made, the verdict and what else was seen."""

    seed: int
    topology: str
    steps: list[Step]
    history: list[Write]
    verdict: Verdict
    anomalies: list[str]
    seconds: float


def start(
    topology: str,
    folder: Path,
    broker: Mosquitto,
    start_registry: Callable[[str | None], Registry],
    *,
    members: int = 1,
    journal_url: str | None = None,
) -> Pair:
    """A and B (`start_registry(notifications_url)`), the bridge and one daemon for
    `topology` (`members` daemons of one fleet on one journal: `journal_url`, an empty
    database, or a SQLite file), delete replication on, reconcile on."""
    return start_pair(
        folder,
        broker,
        start_registry,
        reconcile_interval=RECONCILE_INTERVAL_SECONDS,
        one_way=topology == "one-way",
        members=members,
        journal_url=journal_url,
    )


class Executor:
    """Makes a schedule's steps happen at a Pair and records the writes."""

    def __init__(self, pair: Pair, broker: Mosquitto | None = None) -> None:
        self.pair = pair
        self.broker = broker
        self.history: list[Write] = []
        self.passes: list[subprocess.Popen[bytes]] = []
        self._images: dict[str, str] = {}  # digest -> its name in the layout
        self._current: dict[tuple[str, str], str] = {}  # (repository, tag) -> digest there
        self._deleted: dict[tuple[str, str], str] = {}  # (repository, tag) -> last deleted
        self._kills = 0  # a fleet's members are killed in turn
        self.anomalies: list[str] = []  # what went unlike the schedule, and is no violation

    def run(self, steps: Sequence[Step]) -> None:
        """Every step, in order."""
        for step in steps:
            self.step(step)

    def step(self, step: Step) -> None:
        """One step."""
        pair = self.pair
        if step.kind is Kind.PAUSE:
            time.sleep(step.seconds)
        elif step.kind is Kind.PUSH:
            self._push(step, self._new_image())
        elif step.kind is Kind.RESTORE:
            self._push(step, self._deleted[(step.repository, step.tag)])
        elif step.kind is Kind.DELETE:
            self._delete(step)
        elif step.kind is Kind.RECONCILE:
            log = (pair.folder / "backfill.log").open("ab")
            with log:
                command = replicator_command("backfill", "--config", str(pair.config))
                self.passes.append(subprocess.Popen(command, stdout=log, stderr=log))
        elif step.kind is Kind.KILL:
            members = pair.members
            victim = members[self._kills % len(members)]
            self._kills += 1
            victim.kill()
            # Not ready (/readyz 503) while a destination is down, by design: wait until the
            # API answers at all.
            victim.start(ready=False)
            wait_for(
                lambda: victim.readyz() != 0, timeout=READY_TIMEOUT_SECONDS,
                what="the restarted daemon's API",
            )  # fmt: skip
        elif step.kind is Kind.OUTAGE:
            pair.registries[step.side].stop()
        elif step.kind is Kind.WIPE:
            pair.registries[step.side].wipe()
        elif step.kind is Kind.BROKER:
            assert self.broker is not None, "a schedule with broker restarts needs the broker"
            self.broker.restart()
        else:
            pair.registries[step.side].start()

    def _delete(self, step: Step) -> None:
        """Delete the tag's image by digest at its owner, as a user would. A registry killed
        mid-write by an outage step can be left with a tag link it cannot read; distribution
        then answers a manifest DELETE 500 (its tag lookup fails; seeds 4203, 9121). That is
        the user's delete failing, not the daemon's: what the registry serves for the tag
        afterwards says whether the delete happened, and the history records that."""
        key = (step.repository, step.tag)
        digest = self._current[key]
        answer = self.pair.try_delete(step.side, step.repository, digest)
        if answer.status_code != HTTP_ACCEPTED:
            served = self.pair.digest(step.side, step.repository, step.tag)
            self.anomalies.append(
                f"the registry answered {answer.status_code} to the schedule's DELETE of "
                f"{step.tag} ({'still served: no delete' if served == digest else 'gone'})"
            )
            if served == digest:
                return
        del self._current[key]
        self._record(step, digest, deleted=True)
        self._deleted[key] = digest

    def _new_image(self) -> str:
        """A new, distinct image in the layout; its digest."""
        number = len(self._images) + 1
        name = f"h-{time.time_ns()}-{number}"
        spec = LayerSpec(time.time_ns() % 1_000_000_007, LAYER_BYTES)
        built = self.pair.layout.image(name, [spec], label=name)
        self._images[built.digest] = name
        return built.digest

    def _push(self, step: Step, digest: str) -> None:
        pusher = LayoutPusher(self.pair.layout.path, self.pair.url(step.side), step.repository)
        try:
            pusher.push_tag(self._images[digest], as_tag=step.tag)
        finally:
            pusher.close()
        self._current[(step.repository, step.tag)] = digest
        self._record(step, digest, deleted=False)

    def _record(self, step: Step, digest: str, *, deleted: bool) -> None:
        self.history.append(
            Write(step.side, step.repository, step.tag, digest, deleted, time.time())
        )

    def finish_passes(self) -> list[str]:
        """Wait for the command-line reconcile passes; an anomaly line for each that did not
        end well (killed when still running after the timeout)."""
        found = []
        for number, process in enumerate(self.passes):
            try:
                code = process.wait(timeout=RECONCILE_PASS_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
                found.append(f"reconcile pass {number} still running, killed")
                continue
            if code != 0:
                found.append(f"reconcile pass {number} exited {code}")
        return found


def observe(pair: Pair, history: Sequence[Write]) -> Observed:
    """Every written tag at both registries, and every deleted manifest by digest."""
    tags = {
        (side, w.repository, w.tag): pair.digest(side, w.repository, w.tag)
        for w in history
        for side in (A, B)
    }
    manifests = {
        (side, w.repository, w.digest): manifest_digest(pair.url(side), w.repository, w.digest)
        is not None
        for w in history
        if w.deleted
        for side in (A, B)
    }
    return Observed(tags, manifests)


def _epoch(moment: datetime) -> float:
    """A journal time (UTC, naive or not) in seconds since the epoch."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def arrivals(pair: Pair, repository: str) -> Iterator[Arrival]:
    """Each COMPLETE tag copy of the repository: where its replica landed, and when."""
    for job in pair.journal.jobs():
        if (
            job.repository == repository
            and job.kind is JobKind.COPY
            and job.state is JobState.COMPLETE
            and job.tag is not None
            and job.finished_at is not None
        ):
            yield Arrival(job.destination, repository, job.tag, job.digest, _epoch(job.finished_at))


def check(
    pair: Pair,
    seed: int,
    *,
    topology: str,
    length: int,
    tags: int,
    odds: Odds = DEFAULT_ODDS,
    broker: Mosquitto | None = None,
) -> Run:
    """Run seed's schedule on its own repository, wait until quiet, judge the final state;
    `broker` is restarted by the schedule's BROKER steps."""
    repository = f"history/{topology}-{seed}"
    routes = ROUTES[topology]
    steps = schedule(
        seed, length=length, repository=repository, tags=tags, owners=OWNERS[topology],
        routes=routes, odds=odds,
    )  # fmt: skip
    started = time.monotonic()
    executor = Executor(pair, broker)
    try:
        executor.run(steps)
    finally:
        for side in (A, B):  # an error mid-schedule must not leave a registry down
            pair.registries[side].start()
        if broker is not None and not broker.running:
            broker.start()
        for member in pair.members:
            if not member.running:
                member.start()
    anomalies = [*executor.anomalies, *executor.finish_passes()]
    try:
        jobs = pair.wait_quiet(timeout=QUIET_TIMEOUT_SECONDS)
    except AssertionError as exc:
        anomalies.append(f"not quiet: {exc}")
        jobs = pair.journal.jobs()
    failed = Counter(
        f"{j.kind} {j.failure_code}"
        for j in jobs
        if j.repository == repository and j.state is JobState.FAILED
    )
    anomalies.extend(f"{count} {what} jobs FAILED" for what, count in sorted(failed.items()))
    verdict = judge(
        executor.history, observe(pair, executor.history), routes, list(arrivals(pair, repository))
    )
    return Run(
        seed, topology, steps, executor.history, verdict, anomalies, time.monotonic() - started
    )


def describe(run: Run) -> str:
    """A failing run, to replay: the seed, the schedule, the writes and the violations."""
    writes = "\n".join(
        f"  #{i} {'delete' if w.deleted else 'push'} {w.side} {w.repository}:{w.tag}"
        f" {w.digest[:19]}"
        for i, w in enumerate(run.history)
    )
    return (
        f"{run.topology} seed {run.seed}: {len(run.verdict.violations)} violations\n"
        f"schedule: {'; '.join(str(s) for s in run.steps)}\nwrites:\n{writes}\n"
        f"violations:\n  " + "\n  ".join(run.verdict.violations) + "\n"
        f"anomalies: {run.anomalies}"
    )
