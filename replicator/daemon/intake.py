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

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from replicator.daemon.message_rows import NO_EVENTS, Message
from replicator.daemon.metrics import Metrics
from replicator.domain.events import DeleteEvent, Ignored, PushEvent, TagPush
from replicator.domain.events.echoes import (
    ECHO_WINDOW_SECONDS,
    Echo,
    Reported,
    WriteAction,
    recognise_all,
)
from replicator.domain.events.payloads import parse_payload
from replicator.domain.events.tag_resolution import UNRESOLVED_TAG, after_unresolved
from replicator.domain.jobs import JobKey
from replicator.domain.routing import (
    Routing,
    Site,
    by_location,
    replicated_to,
    route_delete,
    route_push,
)
from replicator.domain.routing.rules import Destination
from replicator.errors import EventError, JournalError, ReplicatorError
from replicator.journal.deferred import Kept
from replicator.journal.event_rows import Fingerprint
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

ReportDenied = Callable[[JobKey, str], Awaitable[None]]
# Reads a tag-only push's tag at the source (engine.tag_pushes); raises a ReplicatorError.
ResolveTag = Callable[[TagPush], Awaitable[PushEvent | Ignored]]
# The longest intake waits for a source to answer for a tag: a HEAD takes milliseconds, and the
# client's retry policy (registry/retry.py: 5 tries, full-jitter waits of at most 0.25 + 0.5 +
# 1 + 2 s) spends at most 3.75 s waiting on a 5xx or a refused connection. A source slower than
# this (or asking a longer Retry-After) is taken for down and the message kept aside, so a hung
# source slows intake by this per tag-only push at most, never stops it.
RESOLVE_WITHIN_SECONDS = 5.0


class Intake:
    """Parse, route and journal bus messages for a daemon; `sites` is read per message, so a
    reload applies to the next one. A message naming a tag its source cannot answer for now
    is kept aside (deferred) and handled again later, up to `max_attempts` reads."""

    def __init__(
        self,
        journal: Journal,
        metrics: Metrics,
        sites: Callable[[], Mapping[str, Site]],
        report_denied: ReportDenied,
        resolve: ResolveTag | None = None,
        *,
        max_attempts: int,
    ) -> None:
        self._journal = journal
        self._metrics = metrics
        self._sites = sites
        self._report_denied = report_denied
        self._resolve = resolve
        self._max_attempts = max_attempts

    async def handle(
        self, topic: str, payload: bytes, topic_source: str | None, *, attempts: int = 0
    ) -> None:
        """Record one message (`attempts`: its failed reads of a tag so far, when it was kept
        aside); raises only a temporary JournalError (retry it later). A message kept aside
        is forgotten once recorded, or rejected."""
        message = Message(topic, payload, topic_source, Fingerprint(payload), attempts)
        for attempt in range(1, INTAKE_TRIES + 1):
            try:
                kept_aside = await self._handle(message)
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
                if attempts and not kept_aside:
                    await self._journal.drop_deferred(topic, message.fingerprint.of())
                return
            break
        await self._reject(message, reason, error)
        if attempts:
            await self._journal.drop_deferred(topic, message.fingerprint.of())

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

    async def _handle(self, message: Message) -> bool:
        """Record the message; True when it was kept aside instead (a tag unreadable for now)."""
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
            return False
        # Tag-only pushes (bridged Quay, Artifactory webhooks) are resolved before anything is
        # recorded, so a source that cannot answer for now keeps the message aside whole.
        resolved: set[int] = set()
        for part, event in enumerate(events):
            if isinstance(event, TagPush):
                if self._resolve is None:
                    raise EventError("no resolver for a tag-only push", reason=UNRESOLVED_TAG)
                try:
                    async with asyncio.timeout(RESOLVE_WITHIN_SECONDS):
                        events[part] = await self._resolve(event)
                except (ReplicatorError, TimeoutError) as exc:
                    return await self._unresolved(message, event, exc)
                resolved.add(part)
        now = datetime.now(UTC)
        acted = [
            (part, event)
            for part, event in enumerate(events)
            if isinstance(event, PushEvent | DeleteEvent)
        ]
        echoes = await self._echoes([event for _, event in acted], now)
        echoed = [
            (part, event, echo) for (part, event), echo in zip(acted, echoes, strict=True) if echo
        ]
        routed = [
            (part, event, _route(event, sites))
            for (part, event), echo in zip(acted, echoes, strict=True)
            if echo is None
        ]
        received = [
            message.accepted(event, routing, part, now, resolved=part in resolved)
            for part, event, routing in routed
        ]
        received += [message.echo(event, echo, part) for part, event, echo in echoed]
        ignored = [(part, e) for part, e in enumerate(events) if isinstance(e, Ignored)]
        counts = Counter(str(event.reason) for _, event in ignored)
        if ignored or not events:
            received.append(message.ignored(counts, ignored[0][0] if ignored else 0))
        # The payload is kept on the message's first row only.
        received = [replace(one, keep_payload=not index) for index, one in enumerate(received)]
        await self._journal.record_events(received)
        if resolved and not message.attempts:
            # A redelivery of a message kept aside meanwhile: handled now, not to be again.
            await self._journal.drop_deferred(message.topic, message.fingerprint.of())
        await self._tell(counts, empty=not events, echoed=echoed, routed=routed)
        return False

    async def _tell(
        self,
        counts: Counter[str],
        *,
        empty: bool,
        echoed: Sequence[tuple[int, PushEvent | DeleteEvent, Echo]],
        routed: Sequence[tuple[int, PushEvent | DeleteEvent, Routing]],
    ) -> None:
        """Count and log a recorded message's events; report its denied jobs."""
        for why, count in counts.items():
            self._metrics.events.labels(outcome="ignored", reason=why).inc(count)
        if empty:
            self._metrics.events.labels(outcome="ignored", reason=NO_EVENTS).inc()
        for _, event, echo in echoed:
            self._metrics.events.labels(outcome=EventOutcome.ECHO, reason=echo.reason).inc()
            log.info(
                "event_echo", source=event.source, repository=event.repository,
                digest=event.digest, tag=event.tag, kind=_kind(event), reason=echo.reason,
            )  # fmt: skip
        for _, event, routing in routed:
            self._metrics.events.labels(outcome=EventOutcome.ACCEPTED, reason="").inc()
            log.info(
                "event_accepted",
                source=event.source,
                repository=event.repository,
                digest=event.digest,
                tag=event.tag,
                kind=_kind(event),
                jobs=len(routing.routes),
                denied=sum(1 for r in routing.routes if r.denied),
            )
            for route in routing.routes:
                if route.denied is not None:
                    await self._report_denied(route.key, route.denied)

    async def _echoes(
        self, events: Sequence[PushEvent | DeleteEvent], now: datetime
    ) -> list[Echo | None]:
        """Which of `events` are echoes of the daemon's own writes (domain.events.echoes
        decides from the writes the journal recorded in each event's registry and repository)."""
        found: list[Echo | None] = [None] * len(events)
        places: dict[tuple[str, str], list[int]] = {}
        for position, event in enumerate(events):
            places.setdefault((event.source, event.repository), []).append(position)
        since = now - timedelta(seconds=ECHO_WINDOW_SECONDS)
        written_to = replicated_to(self._sites())
        for (registry, repository), positions in places.items():
            # Only a registry some rule replicates to holds writes of the daemon's to look up.
            writes = (
                await self._journal.own_writes(registry, repository, since)
                if registry in written_to
                else []
            )
            reported = [_reported(events[p]) for p in positions]
            for position, echo in zip(
                positions, recognise_all(reported, writes, now=now.timestamp()), strict=True
            ):
                found[position] = echo
        return found

    async def _unresolved(
        self, message: Message, event: TagPush, exc: ReplicatorError | TimeoutError
    ) -> bool:
        """A tag of the message could not be read at its source: keep the message aside to be
        handled again (True), or reject it (False), as domain.events.tag_resolution decides."""
        if isinstance(exc, TimeoutError):
            temporary, error = True, f"no answer within {RESOLVE_WITHIN_SECONDS:.0f}s"
        else:
            temporary, error = exc.temporary, str(exc)
        attempts = message.attempts + 1
        decision = after_unresolved(
            error=f"{event.tag}: {error}",
            temporary=temporary,
            attempts=attempts,
            max_attempts=self._max_attempts,
            jitter_fraction=random.random(),  # spreads retries; not a secret
        )
        if decision.retry_in is None:
            await self._reject(message, UNRESOLVED_TAG, decision.reason)
            await self._journal.drop_deferred(message.topic, message.fingerprint.of())
            return False
        kept = Kept(
            topic=message.topic,
            source=message.source,
            payload=message.payload,
            sha256=message.fingerprint.of(),
            attempts=attempts,
            due=datetime.now(UTC) + timedelta(seconds=decision.retry_in),
            error=decision.reason,
        )
        # The event row says it once, when the message first arrives; retries update the kept
        # row only.
        first = message.attempts == 0
        reason = f"{UNRESOLVED_TAG}: {decision.reason}"
        await self._journal.defer_message(
            kept, message.recorded(EventOutcome.DEFERRED, reason) if first else None
        )
        self._metrics.events.labels(outcome=EventOutcome.DEFERRED, reason=UNRESOLVED_TAG).inc()
        log.warning(
            "event_deferred", topic=message.topic, source=event.source,
            repository=event.repository, tag=event.tag, attempts=attempts,
            retry_in=round(decision.retry_in, 1), error=error,
        )  # fmt: skip
        return True


def _route(event: PushEvent | DeleteEvent, sites: Mapping[str, Site]) -> Routing:
    return route_push(event, sites) if isinstance(event, PushEvent) else route_delete(event, sites)


def _kind(event: PushEvent | DeleteEvent) -> str:
    return "delete" if isinstance(event, DeleteEvent) else "push"


def _reported(event: PushEvent | DeleteEvent) -> Reported:
    """What an event reports done at its registry, as domain.events.echoes compares it."""
    if isinstance(event, DeleteEvent):
        return Reported(WriteAction.DELETE, event.digest, event.tag, event.agent)
    return Reported(WriteAction.PUSH, event.digest, event.tag, event.agent)


def _locator(sites: Mapping[str, Site]) -> Callable[[str, str], str | None]:
    """The configured registry at an (account, region), as EventBridge events name sources."""
    located = by_location(sites)

    def locate(account: str, region: str) -> str | None:
        site = located.get(Destination(region=region, registry_id=account))
        return site.name if site is not None else None

    return locate
