"""Whether an event is the echo of the daemon's own write: a replica is not a new push.

When the daemon copies an image to a registry that is itself a source (an active-active pair,
A -> B and B -> A), that registry reports the replica's manifest PUTs as pushes, and a delete
the daemon replicated as a delete. Turned into jobs, each would be copied back where it came
from: a wasted job per push at best, at worst a delete undone (the echo's job copies the image
back to A just after A deleted it) and tags moved back and forth.

Two facts tell an echo, either is enough:

- the journal's record of what the daemon writes (`OwnWrite`): before each manifest PUT and
  each delete at a destination, the engine records the registry, repository, digest and tag.
  An event at that registry naming what a recorded write wrote, within ECHO_WINDOW_SECONDS and
  not yet matched by an earlier event, is its echo (this holds whatever the sender carries);
- what the sender says: distribution's `request.useragent` is our replication clients'
  REPLICA_USER_AGENT (the daemon, reconcile and backfill send it; `replicator copy` does not,
  since a copy made by hand is a push like any other).

Each write is the echo of one event at most: a user pushing the same digest under the same tag
later (a rollback at B) is a new push again.

A sender that names another client is believed over the journal: every write of the daemon's is
made with REPLICA_USER_AGENT, so an event reporting another agent is somebody else's work even
when a recorded write would explain it. This matters for a manifest delete's tag events, which
carry no digest: matched by the journal alone, a user's delete of a tag (distribution reports it
as the manifest's event and then one per tag) was taken for the echo of any manifest delete the
daemon made in that repository within the window, and the tag was left standing on the other
side of an active-active pair, to be copied back by reconcile (the history checker's class b).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

# The User-Agent of requests made for replication (daemon, reconcile, backfill): a registry
# reporting it in an event (distribution's `request.useragent`) names a replica.
REPLICA_USER_AGENT = "replicator-replication"
# How long after a write its echo is expected. Distribution notifies within milliseconds, but
# queues and retries a notification its endpoint (the bridge, the broker behind it) refuses:
# ten minutes covers an endpoint down that long. A longer window only risks taking a user's
# push of exactly the digest and tag the daemon wrote there, unmatched, for an echo.
ECHO_WINDOW_SECONDS = 600.0


class WriteAction(StrEnum):
    """What the daemon did at a registry."""

    PUSH = "push"  # a manifest PUT, by digest or under a tag
    DELETE = "delete"  # a manifest or tag DELETE


class EchoReason(StrEnum):
    """Why an event was taken for an echo (a metric label)."""

    OWN_WRITE = "own_write"  # the journal records the daemon writing it there
    REPLICA_AGENT = "replica_agent"  # the sender names our replication client


@dataclass(frozen=True, slots=True)
class Write:
    """A write about to be made at `registry`/`repository`: a manifest PUT (by digest, or
    under `tag`) or a delete (of `digest`, or of `tag`; digest "" when not known)."""

    registry: str
    repository: str
    action: WriteAction
    digest: str
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class OwnWrite:
    """A write the daemon recorded making at a registry: `digest` ("" when not known, as for
    a delete by tag), `tag` (None for a write by digest), `at` in seconds since the epoch;
    `echoed` when an event was already matched to it."""

    id: int
    action: WriteAction
    digest: str
    tag: str | None
    at: float
    echoed: bool = False


@dataclass(frozen=True, slots=True)
class Reported:
    """What an event reports done at its registry: the action, digest and tag it names, and
    the sender's user agent (None when it carries none)."""

    action: WriteAction
    digest: str | None
    tag: str | None
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class Echo:
    """An event recognised as an echo: why, the write it echoes (None when only the sender
    said so) and the words recorded with the event."""

    reason: EchoReason
    write: int | None
    detail: str


def is_replica_agent(agent: str | None) -> bool:
    """Whether a sender's user agent is our replication clients'."""
    return agent is not None and agent.startswith(REPLICA_USER_AGENT)


def _matches(event: Reported, write: OwnWrite) -> bool:
    if write.action is not event.action:
        return False
    if event.action is WriteAction.PUSH:
        # A push event names the manifest's digest, and its tag when it was PUT by tag.
        return event.digest == write.digest and (event.tag is None or event.tag == write.tag)
    # Distribution reports a manifest delete as one event by digest and one per tag it had:
    # a tag's event (no digest) is the echo of a delete of that tag or of a manifest delete.
    if event.digest is not None and event.digest == write.digest:
        return True
    return event.tag is not None and (event.tag == write.tag or write.tag is None)


def _matchable(event: Reported, write: OwnWrite) -> bool:
    """A write not yet echoed; or a manifest delete, whose tags' events follow its own."""
    manifest_delete = write.action is WriteAction.DELETE and write.tag is None
    return not write.echoed or (manifest_delete and event.digest is None)


def recognise(
    event: Reported, writes: Sequence[OwnWrite], *, now: float, window: float = ECHO_WINDOW_SECONDS
) -> Echo | None:
    """The echo `event` is of `writes` (the daemon's recorded writes in the event's registry
    and repository), or None when it is a new push or delete. The oldest matching write within
    `window` seconds before `now` is the one echoed: a registry reports writes in order."""
    if event.agent is not None and not is_replica_agent(event.agent):
        return None  # the sender names another client: not ours, whatever the journal holds
    candidates = sorted(
        (w for w in writes if now - window <= w.at and _matchable(event, w) and _matches(event, w)),
        key=lambda w: (w.echoed, w.at, w.id),
    )
    if candidates:
        write = candidates[0]
        named = write.tag or write.digest
        return Echo(
            EchoReason.OWN_WRITE,
            None if write.echoed else write.id,
            f"echo of the daemon's own {write.action} of {named} ({now - write.at:.1f}s before)",
        )
    if event.agent is not None and is_replica_agent(event.agent):
        return Echo(
            EchoReason.REPLICA_AGENT,
            None,
            f"echo: the registry names the replicator's replication client ({event.agent[:80]})",
        )
    return None


def recognise_all(
    events: Sequence[Reported],
    writes: Sequence[OwnWrite],
    *,
    now: float,
    window: float = ECHO_WINDOW_SECONDS,
) -> list[Echo | None]:
    """`recognise` for the events of one message and repository in order: a write matched by
    one of them is not matched again by the next."""
    remaining = list(writes)
    found: list[Echo | None] = []
    for event in events:
        echo = recognise(event, remaining, now=now, window=window)
        if echo is not None and echo.write is not None:
            remaining = [replace(w, echoed=True) if w.id == echo.write else w for w in remaining]
        found.append(echo)
    return found
