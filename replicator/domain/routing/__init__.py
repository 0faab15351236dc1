"""From an accepted event to jobs: rules choose destinations, policies admit or deny each one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from replicator.domain.events import DeleteEvent, PushEvent
from replicator.domain.images.media import ManifestKind, classify
from replicator.domain.jobs import JobKey, JobKind
from replicator.domain.jobs.freshness import event_origin
from replicator.domain.routing.policy import (
    Decision,
    RegistryPolicy,
    check_delete,
    check_replication,
)
from replicator.domain.routing.rules import Destination, ReplicationConfig, match, match_deletes

# An untagged image manifest push is held this long before a worker takes it: skopeo, docker
# and buildx push an index's children untagged a few milliseconds before the index itself, and
# the index's job copies them anyway, so the index push cancels the children's jobs within it.
UNTAGGED_GRACE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Site:
    """A configured registry as routing sees it."""

    name: str
    account: str
    region: str
    replication: ReplicationConfig
    policy: RegistryPolicy | None

    @property
    def location(self) -> Destination:
        """The (region, registryId) pair rules name destinations by."""
        return Destination(region=self.region, registry_id=self.account)


@dataclass(frozen=True, slots=True)
class Route:
    """One job to journal: denied (with the reason) or to run after `delay` seconds."""

    key: JobKey
    denied: str | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Routing:
    """Jobs for an event, and the untagged jobs an index push makes redundant."""

    routes: tuple[Route, ...]
    supersedes: tuple[JobKey, ...] = ()


def by_location(sites: Mapping[str, Site]) -> dict[Destination, Site]:
    """The sites by account and region (how rules and EventBridge events name registries)."""
    return {site.location: site for site in sites.values()}


def replicated_to(sites: Mapping[str, Site]) -> frozenset[str]:
    """The names of the sites some rule of some site replicates to (where the daemon writes)."""
    located = by_location(sites)
    return frozenset(
        located[target].name
        for site in sites.values()
        for target in site.replication.destinations
        if target in located
    )


def returning_routes(sites: Mapping[str, Site]) -> frozenset[tuple[str, str]]:
    """The routes (source, destination) whose destination replicates back to the source (an
    active-active pair, by the rules' destinations alone): where the scan's hold reads the
    journal's record of who wrote a tag last (domain.routing.scan.hold_newer), which retention
    therefore keeps."""
    located = by_location(sites)
    edges = {
        (name, located[target].name)
        for name, site in sites.items()
        for target in site.replication.destinations
        if target in located
    }
    return frozenset(edge for edge in edges if (edge[1], edge[0]) in edges)


def cycles(sites: Mapping[str, Site]) -> list[tuple[str, ...]]:
    """Every loop of replication between registries (A -> B -> A, A -> B -> C -> A), each once,
    starting at its first registry in config order; by the rules' destinations alone (a loop
    may hold for some repositories only)."""
    order = {name: index for index, name in enumerate(sites)}
    located = by_location(sites)
    edges = {
        name: [located[t].name for t in site.replication.destinations if t in located]
        for name, site in sites.items()
    }
    found: list[tuple[str, ...]] = []

    def walk(start: str, path: tuple[str, ...]) -> None:
        for nxt in edges[path[-1]]:
            if nxt == start and len(path) > 1:
                found.append(path)
            elif nxt not in path and order[nxt] > order[start]:
                walk(start, (*path, nxt))

    for name in sites:
        walk(name, (name,))
    return found


def destinations(
    source: Site,
    sites: Mapping[str, Site],
    *,
    repository: str,
    tag: str | None,
    deletes: bool = False,
) -> tuple[Site, ...]:
    """The configured sites the source's rules send a push (or, with `deletes`, a delete) of
    `repository[:tag]` to, in rule order. A destination no registry is configured at is left
    out: config validation refuses it, and a reload race must not crash routing."""
    located = by_location(sites)
    chosen = (match_deletes if deletes else match)(
        source.replication, source=source.location, repository=repository, tag=tag
    )
    return tuple(located[d] for d in chosen if d in located)


def route_push(event: PushEvent, sites: Mapping[str, Site]) -> Routing:
    """The jobs a push creates; ReplicateImage denials of tagged images and indexes are decided
    here, before any I/O (untagged images' at run time, see below)."""
    source = sites[event.source]
    routes: list[Route] = []
    supersedes: list[JobKey] = []
    kind = classify(event.media_type or "")
    untagged_image = event.tag is None and kind is not ManifestKind.INDEX
    for target in destinations(source, sites, repository=event.repository, tag=event.tag):
        key = JobKey(
            event.source, event.repository, event.digest, event.tag, target.name,
            origin=event_origin(event.event_id),
        )  # fmt: skip
        if untagged_image:
            # Not denied yet: the child of an index push must wait to be superseded like an
            # allowed one, else a denied index leaves three FAILED jobs instead of one. A job
            # that is not superseded meets the worker's policy check, which fails it the same
            # way (POLICY_DENIED with the reason).
            routes.append(Route(key, delay=UNTAGGED_GRACE_SECONDS))
        else:
            decision = admit_replication(source, target, event.repository, repository_exists=True)
            routes.append(Route(key, denied=None if decision.allowed else decision.reason))
        supersedes.extend(
            JobKey(event.source, event.repository, child, None, target.name)
            for child in event.references
        )
    return Routing(tuple(routes), tuple(supersedes))


def route_delete(event: DeleteEvent, sites: Mapping[str, Site]) -> Routing:
    """Delete jobs for destinations whose rule has delete replication on."""
    source = sites[event.source]
    routes: list[Route] = []
    reached = destinations(source, sites, repository=event.repository, tag=event.tag, deletes=True)
    for target in reached:
        key = JobKey(
            event.source,
            event.repository,
            event.digest or "",
            event.tag,
            target.name,
            JobKind.DELETE,
            origin=event_origin(event.event_id),
        )
        decision = check_delete(
            target.policy,
            source_account=source.account,
            dest_account=target.account,
            dest_region=target.region,
            repository=event.repository,
        )
        routes.append(Route(key, denied=None if decision.allowed else decision.reason))
    return Routing(tuple(routes))


def admit_replication(
    source: Site, target: Site, repository: str, *, repository_exists: bool
) -> Decision:
    """Whether `target`'s policy lets `source`'s account replicate `repository` there."""
    return check_replication(
        target.policy,
        source_account=source.account,
        dest_account=target.account,
        dest_region=target.region,
        repository=repository,
        repository_exists=repository_exists,
    )


def existence_matters(source: Site, target: Site, repository: str) -> bool:
    """Whether the policy's answer depends on the repository existing at `target`
    (ecr:CreateRepository): only then need the destination be asked whether it does."""
    if source.account == target.account:
        return False
    if_exists = admit_replication(source, target, repository, repository_exists=True)
    if_new = admit_replication(source, target, repository, repository_exists=False)
    return if_exists.allowed != if_new.allowed
