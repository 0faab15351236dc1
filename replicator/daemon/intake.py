"""Intake: one bus message -> parsed, routed and journalled (accepted, ignored or rejected).

No message can stop intake. Whatever goes wrong while one message is handled ends with the
message recorded (rejected, with the reason) and returned to the consumer, which acknowledges it
and goes on; only a journal that refuses every write for now (a temporary JournalError) is
passed up, so the consumer keeps the message unacknowledged and retries it.

A message costs the journal little whatever it holds: its payload is stored once (on its first
row), the events needing no work (pulls, blob pushes, mounts) are counted in one row per
message, not stored one by one, and its events are recorded several to a transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from replicator.daemon.metrics import Metrics
from replicator.domain.events import DeleteEvent, Ignored, PushEvent, TagPush
from replicator.domain.jobs import JobKey
from replicator.domain.payloads import parse_payload
from replicator.domain.routing import Routing, Site, by_location, route_delete, route_push
from replicator.domain.rules import Destination
from replicator.errors import EventError, JournalError, ReplicatorError
from replicator.journal.events import Fingerprint, ReceivedEvent
from replicator.journal.models import EventOutcome
from replicator.journal.store import Journal
from replicator.logs import get_logger

log = get_logger(__name__)

# Times a message is handled before an unexpected error rejects it: a second try gets past a
# race with another process (a job moved under a fleet peer's feet raises TransitionError
# once); a message that fails twice fails for what it holds, and is set aside.
INTAKE_TRIES = 2
# The reason words of messages rejected by intake itself rather than by the parser.
JOURNAL_REFUSED = "journal_refused"
INTERNAL_ERROR = "internal_error"
# The reason recorded for an envelope without events.
NO_EVENTS = "no_events"

ReportDenied = Callable[[JobKey, str], Awaitable[None]]
# Reads a tag-only push's tag at the source (daemon.tag_pushes); raises a ReplicatorError.
ResolveTag = Callable[[TagPush], Awaitable[PushEvent | Ignored]]
# The reason word of a message whose tag-only push could not be read at the source.
UNRESOLVED_TAG = "unresolved_tag"


@dataclass(frozen=True, slots=True)
class Message:
    """One bus message being handled: where it came from, what it holds, its fingerprint."""

    topic: str
    payload: bytes
    source: str | None  # the source registry its topic names
    fingerprint: Fingerprint

    def rejected(self, reason: str) -> ReceivedEvent:
        """The message as the journal records it rejected, for `reason`."""
        return ReceivedEvent(
            source=self.source,
            topic=self.topic,
            payload=self.payload,
            outcome=EventOutcome.REJECTED,
            reason=reason,
            fingerprint=self.fingerprint,
        )


class Intake:
    """Parse, route and journal bus messages for a daemon; `sites` is read per message, so a
    reload applies to the next one."""

    def __init__(
        self,
        journal: Journal,
        metrics: Metrics,
        sites: Callable[[], Mapping[str, Site]],
        report_denied: ReportDenied,
        resolve: ResolveTag | None = None,
    ) -> None:
        self._journal = journal
        self._metrics = metrics
        self._sites = sites
        self._report_denied = report_denied
        self._resolve = resolve

    async def handle(self, topic: str, payload: bytes, topic_source: str | None) -> None:
        """Record one message; raises only a temporary JournalError (retry it later)."""
        message = Message(topic, payload, topic_source, Fingerprint(payload))
        for attempt in range(1, INTAKE_TRIES + 1):
            try:
                await self._handle(message)
            except JournalError as exc:
                if exc.temporary:
                    raise
                reason, error = JOURNAL_REFUSED, str(exc)
            except Exception as exc:
                if attempt < INTAKE_TRIES:
                    log.warning("intake_retry", topic=topic, error=f"{type(exc).__name__}: {exc}")
                    continue
                log.exception("intake_failed", topic=topic)
                reason, error = INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
            else:
                return
            break
        await self._reject(message, reason, error)

    async def _reject(self, message: Message, reason: str, error: str) -> None:
        """Record the message rejected; if even that is refused for good, log it and go on."""
        self._metrics.events.labels(outcome="rejected", reason=reason).inc()
        log.warning("event_rejected", topic=message.topic, reason=reason, error=error)
        try:
            await self._journal.record_event(message.rejected(f"{reason}: {error}"))
        except JournalError as exc:
            if exc.temporary:
                raise
            log.error("event_unrecordable", topic=message.topic, reason=reason, error=str(exc))  # noqa: TRY400 - the message is the point

    async def _handle(self, message: Message) -> None:
        sites = self._sites()
        try:
            events = parse_payload(
                message.payload,
                topic_source=message.source,
                locate=_locator(sites),
                sources=sites.keys(),
            )
        except EventError as exc:
            self._metrics.events.labels(outcome="rejected", reason=exc.reason).inc()
            log.warning("event_rejected", topic=message.topic, reason=exc.reason, error=str(exc))
            await self._journal.record_event(message.rejected(f"{exc.reason}: {exc}"))
            return
        # Tag-only pushes (bridged Quay, Artifactory webhooks) are resolved before anything is
        # recorded, so a source that cannot answer rejects the message whole.
        resolved: set[int] = set()
        for part, event in enumerate(events):
            if isinstance(event, TagPush):
                if self._resolve is None:
                    raise EventError("no resolver for a tag-only push", reason=UNRESOLVED_TAG)
                try:
                    events[part] = await self._resolve(event)
                except ReplicatorError as exc:
                    await self._reject(message, UNRESOLVED_TAG, f"{event.tag}: {exc}")
                    return
                resolved.add(part)
        now = datetime.now(UTC)
        routed = [
            (part, event, _route(event, sites))
            for part, event in enumerate(events)
            if isinstance(event, PushEvent | DeleteEvent)
        ]
        received = [
            _accepted(message, event, routing, part, now, resolved=part in resolved)
            for part, event, routing in routed
        ]
        ignored = [(part, e) for part, e in enumerate(events) if isinstance(e, Ignored)]
        counts = Counter(str(event.reason) for _, event in ignored)
        if ignored or not events:
            # One row for every ignored event of the message, with their count per reason.
            received.append(
                ReceivedEvent(
                    source=message.source,
                    topic=message.topic,
                    payload=message.payload,
                    outcome=EventOutcome.IGNORED,
                    reason=_ignored_reason(counts),
                    part=ignored[0][0] if ignored else 0,
                    fingerprint=message.fingerprint,
                )
            )
        # The payload is kept on the message's first row only.
        received = [replace(one, keep_payload=not index) for index, one in enumerate(received)]
        await self._journal.record_events(received)
        for why, count in counts.items():
            self._metrics.events.labels(outcome="ignored", reason=why).inc(count)
        if not events:
            self._metrics.events.labels(outcome="ignored", reason=NO_EVENTS).inc()
        for _, event, routing in routed:
            self._metrics.events.labels(outcome=EventOutcome.ACCEPTED, reason="").inc()
            log.info(
                "event_accepted",
                source=event.source,
                repository=event.repository,
                digest=event.digest,
                tag=event.tag,
                kind="delete" if isinstance(event, DeleteEvent) else "push",
                jobs=len(routing.routes),
                denied=sum(1 for r in routing.routes if r.denied),
            )
            for route in routing.routes:
                if route.denied is not None:
                    await self._report_denied(route.key, route.denied)


def _route(event: PushEvent | DeleteEvent, sites: Mapping[str, Site]) -> Routing:
    return route_push(event, sites) if isinstance(event, PushEvent) else route_delete(event, sites)


def _accepted(
    message: Message,
    event: PushEvent | DeleteEvent,
    routing: Routing,
    part: int,
    now: datetime,
    *,
    resolved: bool,
) -> ReceivedEvent:
    """One push or delete to journal, with its jobs; `resolved`: its digest was read at the
    source (a HEAD of its tag), which the recorded reason says."""
    when = event.pushed_at if isinstance(event, PushEvent) else event.deleted_at
    return ReceivedEvent(
        source=event.source,
        topic=message.topic,
        payload=message.payload,
        outcome=EventOutcome.ACCEPTED,
        reason=("digest resolved at the source; " if resolved else "")
        + (f"{len(routing.routes)} destination(s)" if routing.routes else "no rule matches"),
        job_keys=[r.key for r in routing.routes if r.denied is None],
        denied={r.key: r.denied for r in routing.routes if r.denied is not None},
        pushed_at=datetime.fromtimestamp(when, UTC) if when else None,
        not_before={r.key: now + timedelta(seconds=r.delay) for r in routing.routes if r.delay > 0},
        supersede=routing.supersedes,
        part=part,
        fingerprint=message.fingerprint,
    )


def _ignored_reason(counts: Counter[str]) -> str:
    """ "pull" for one ignored event; "3 events ignored: pull 2, blob_push 1" for several."""
    total = sum(counts.values())
    if total == 0:
        return NO_EVENTS
    if total == 1:
        return next(iter(counts))
    detail = ", ".join(f"{why} {count}" for why, count in counts.most_common())
    return f"{total} events ignored: {detail}"


def _locator(sites: Mapping[str, Site]) -> Callable[[str, str], str | None]:
    """The configured registry at an (account, region), as EventBridge events name sources."""
    located = by_location(sites)

    def locate(account: str, region: str) -> str | None:
        site = located.get(Destination(region=region, registry_id=account))
        return site.name if site is not None else None

    return locate
