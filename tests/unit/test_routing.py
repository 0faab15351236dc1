"""Routing: an accepted push or delete -> the jobs to journal, denied ones with their reason."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from replicator.domain.events import DeleteEvent, PushEvent
from replicator.domain.images.media import MediaType
from replicator.domain.jobs import NO_ORIGIN, JobKey, JobKind
from replicator.domain.routing import (
    UNTAGGED_GRACE_SECONDS,
    Site,
    admit_replication,
    cycles,
    destinations,
    existence_matters,
    replicated_to,
    returning_routes,
    route_delete,
    route_push,
)
from replicator.domain.routing.policy import parse_policy
from replicator.domain.routing.rules import parse_replication_config

SOURCE_ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
IMAGE = MediaType.OCI_MANIFEST.value
INDEX = MediaType.OCI_INDEX.value
DIGEST = "sha256:" + "a" * 64
CHILD_1 = "sha256:" + "1" * 64
CHILD_2 = "sha256:" + "2" * 64
TO_BOTH = [
    {"region": "us-west-2", "registryId": SOURCE_ACCOUNT},
    {"region": "eu-west-1", "registryId": OTHER_ACCOUNT},
]


def _prefix(*prefixes: str) -> list[dict[str, str]]:
    return [{"filter": p, "filterType": "PREFIX_MATCH"} for p in prefixes]


def _statement(effect: str, resource: str, actions: list[str] | None = None) -> dict[str, Any]:
    return {
        "Sid": f"{effect}Source",
        "Effect": effect,
        "Principal": {"AWS": f"arn:aws:iam::{SOURCE_ACCOUNT}:root"},
        "Action": actions or ["ecr:CreateRepository", "ecr:ReplicateImage"],
        "Resource": f"arn:aws:ecr:eu-west-1:{OTHER_ACCOUNT}:repository/{resource}",
    }


ALLOW_PROD = {"Version": "2012-10-17", "Statement": [_statement("Allow", "prod/*")]}
ALLOW_ALL_DENY_SECRET = {
    "Version": "2012-10-17",
    "Statement": [_statement("Allow", "*"), _statement("Deny", "prod/secret*")],
}
ALLOW_DELETES = {
    "Version": "2012-10-17",
    "Statement": [_statement("Allow", "*", ["ecr:ReplicateImage", "ecr:BatchDeleteImage"])],
}
# A same-account destination's policy never matters: this one would deny everything.
DENY_ALL_SAME_ACCOUNT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "DenyAll",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "ecr:*",
            "Resource": "*",
        }
    ],
}


def sites(
    rules: list[dict[str, Any]],
    *,
    euw1_policy: dict[str, Any] | None = ALLOW_PROD,
    usw2_policy: dict[str, Any] | None = None,
    with_euw1: bool = True,
) -> dict[str, Site]:
    """use1 (the source, with `rules`), usw2 (same account) and euw1 (other account)."""
    found = {
        "use1": Site(
            "use1", SOURCE_ACCOUNT, "us-east-1", parse_replication_config({"rules": rules}), None
        ),
        "usw2": Site(
            "usw2",
            SOURCE_ACCOUNT,
            "us-west-2",
            parse_replication_config({"rules": []}),
            parse_policy(usw2_policy) if usw2_policy else None,
        ),
        "euw1": Site(
            "euw1",
            OTHER_ACCOUNT,
            "eu-west-1",
            parse_replication_config({"rules": []}),
            parse_policy(euw1_policy) if euw1_policy else None,
        ),
    }
    if not with_euw1:
        del found["euw1"]
    return found


def push(
    repository: str = "prod/app",
    tag: str | None = "v1",
    media_type: str | None = IMAGE,
    references: tuple[str, ...] = (),
) -> PushEvent:
    """A push to use1."""
    return PushEvent("use1", repository, DIGEST, tag, media_type, 1.0, "e1", references)


def key(destination: str, repository: str = "prod/app", tag: str | None = "v1") -> JobKey:
    """The copy job of DIGEST to `destination`, made by push() (event "e1")."""
    return JobKey("use1", repository, DIGEST, tag, destination, origin="e1")


BOTH_PROD = [{"destinations": TO_BOTH, "repositoryFilters": _prefix("prod", "dev")}]
V_TAGS_TO_USW2 = [
    {"destinations": TO_BOTH[:1], "tagFilters": [{"filter": "^v", "filterType": "REGEX"}]}
]
ALL_BUT_TMP = [{"destinations": TO_BOTH, "excludeRepositoryFilters": _prefix("prod/tmp")}]


class TestRoutePushDestinations:
    """Rules x policies x same/cross account -> routes, denied ones carrying the reason."""

    @pytest.mark.parametrize(
        ("site_map", "event", "expected"),
        [
            (sites(BOTH_PROD), push(), {"usw2": None, "euw1": None}),
            (
                sites(BOTH_PROD),
                push("dev/app"),
                {"usw2": None, "euw1": "policy allows no ecr:ReplicateImage"},
            ),
            (
                sites(BOTH_PROD, euw1_policy=None),
                push(),
                {"usw2": None, "euw1": "has no policy"},
            ),
            (
                sites(BOTH_PROD, euw1_policy=ALLOW_ALL_DENY_SECRET),
                push("prod/secret-app"),
                {"usw2": None, "euw1": "statement DenySource denies ecr:ReplicateImage"},
            ),
            (
                sites(BOTH_PROD, euw1_policy=ALLOW_ALL_DENY_SECRET),
                push("dev/app"),
                {"usw2": None, "euw1": None},
            ),
            (
                sites(BOTH_PROD, usw2_policy=DENY_ALL_SAME_ACCOUNT), push(),
                {"usw2": None, "euw1": None},
            ),
            (sites(BOTH_PROD), push("qa/app"), {}),
            (
                sites(V_TAGS_TO_USW2),
                push(tag="v1"),
                {"usw2": None},
            ),
            (
                sites(V_TAGS_TO_USW2),
                push(tag="latest"),
                {},
            ),
            (
                sites(ALL_BUT_TMP),
                push("prod/tmp-1"),
                {},
            ),
            (sites(BOTH_PROD, with_euw1=False), push(), {"usw2": None}),
        ],
        ids=[
            "prod-allowed-everywhere",
            "dev-denied-cross-account",
            "no-policy-denies-cross-account",
            "explicit-deny-beats-allow",
            "allow-star-admits-other-repos",
            "same-account-ignores-policy",
            "no-rule-matches",
            "tag-filter-matches",
            "tag-filter-skips",
            "exclude-filter",
            "destination-gone-after-reload",
        ],
    )  # fmt: skip
    def test_routes(
        self, site_map: dict[str, Site], event: PushEvent, expected: dict[str, str | None]
    ) -> None:
        """Each destination the rules select gets one route; a denial names the missing
        permission (or the deciding statement) in its reason."""
        routing = route_push(event, site_map)
        got = {route.key.destination: route.denied for route in routing.routes}
        assert set(got) == set(expected)
        for destination, reason in expected.items():
            route = next(r for r in routing.routes if r.key.destination == destination)
            assert route.key == key(destination, event.repository, event.tag)
            if reason is None:
                assert route.denied is None
            else:
                assert route.denied is not None
                assert reason in route.denied

    def test_denied_reason_names_principal_and_resource(self) -> None:
        """The reason of a denial names the source account's root and the destination ARN."""
        routing = route_push(push("dev/app"), sites(BOTH_PROD))
        (denied,) = [r for r in routing.routes if r.denied]
        assert denied.denied is not None
        assert f"arn:aws:iam::{SOURCE_ACCOUNT}:root" in denied.denied
        assert f"arn:aws:ecr:eu-west-1:{OTHER_ACCOUNT}:repository/dev/app" in denied.denied


class TestRoutePushTiming:
    """Untagged image pushes wait out the grace; index pushes supersede their children."""

    @pytest.mark.parametrize(
        ("tag", "media_type", "delay"),
        [
            ("v1", IMAGE, 0.0),
            (None, IMAGE, UNTAGGED_GRACE_SECONDS),
            (None, MediaType.DOCKER_MANIFEST.value, UNTAGGED_GRACE_SECONDS),
            (None, None, UNTAGGED_GRACE_SECONDS),
            (None, MediaType.OCI_ARTIFACT.value, UNTAGGED_GRACE_SECONDS),
            (None, INDEX, 0.0),
            ("v1", INDEX, 0.0),
            (None, f"{IMAGE}; charset=utf-8", UNTAGGED_GRACE_SECONDS),
        ],
        ids=[
            "tagged-image-now",
            "untagged-oci-image-waits",
            "untagged-docker-image-waits",
            "untagged-unknown-type-waits",
            "untagged-artifact-waits",
            "untagged-index-now",
            "tagged-index-now",
            "media-type-parameters-ignored",
        ],
    )
    def test_delay(self, tag: str | None, media_type: str | None, delay: float) -> None:
        """Only untagged non-index pushes are held for the grace period, at every
        destination."""
        routing = route_push(push(tag=tag, media_type=media_type), sites(BOTH_PROD))
        assert [route.delay for route in routing.routes] == [delay, delay]

    def test_untagged_image_denial_is_left_to_the_worker(self) -> None:
        """An untagged image the destination's policy refuses is not denied at routing: it waits
        the grace like an allowed one, so an index push can supersede it (the worker's policy
        check fails it POLICY_DENIED if none does)."""
        routing = route_push(push("dev/app", tag=None), sites(BOTH_PROD))
        assert [(r.key.destination, r.denied, r.delay) for r in routing.routes] == [
            ("usw2", None, UNTAGGED_GRACE_SECONDS),
            ("euw1", None, UNTAGGED_GRACE_SECONDS),
        ]

    def test_denied_index_is_denied_at_once(self) -> None:
        """An index push the policy refuses is denied at routing, with no delay."""
        event = push("dev/app", media_type=INDEX, references=(CHILD_1,))
        routing = route_push(event, sites(BOTH_PROD))
        (denied,) = [r for r in routing.routes if r.key.destination == "euw1"]
        assert denied.denied is not None
        assert "ecr:ReplicateImage" in denied.denied
        assert denied.delay == 0.0

    def test_index_push_supersedes_its_children_at_every_destination(self) -> None:
        """An index push lists each child's untagged job at each destination in supersedes."""
        event = push(tag="v1", media_type=INDEX, references=(CHILD_1, CHILD_2))
        routing = route_push(event, sites(BOTH_PROD))
        assert set(routing.supersedes) == {
            JobKey("use1", "prod/app", child, None, destination)
            for child in (CHILD_1, CHILD_2)
            for destination in ("usw2", "euw1")
        }
        assert [route.key.digest for route in routing.routes] == [DIGEST, DIGEST]

    def test_image_push_supersedes_nothing(self) -> None:
        """A push without references supersedes no job."""
        assert route_push(push(), sites(BOTH_PROD)).supersedes == ()

    def test_no_destination_no_supersede(self) -> None:
        """An index push that no rule selects supersedes nothing (its children run if routed)."""
        event = push("qa/app", media_type=INDEX, references=(CHILD_1,))
        assert route_push(event, sites(BOTH_PROD)).supersedes == ()


DELETING = [
    {
        "destinations": TO_BOTH,
        "repositoryFilters": _prefix("prod"),
        "deleteReplication": {"enabled": True},
    }
]


class TestRouteDelete:
    """Delete jobs only where the rule replicates deletes and the policy allows them."""

    @pytest.mark.parametrize(
        ("rules", "policy", "digest", "tag", "expected"),
        [
            (DELETING, ALLOW_DELETES, DIGEST, None, {"usw2": None, "euw1": None}),
            (DELETING, ALLOW_DELETES, None, "v1", {"usw2": None, "euw1": None}),
            (
                DELETING, ALLOW_PROD, DIGEST, None,
                {"usw2": None, "euw1": "allows no ecr:BatchDeleteImage"},
            ),
            (DELETING, None, DIGEST, None, {"usw2": None, "euw1": "has no policy"}),
            (BOTH_PROD, ALLOW_DELETES, DIGEST, None, {}),
        ],
        ids=[
            "digest-delete",
            "tag-delete",
            "policy-without-batch-delete",
            "no-policy",
            "delete-replication-off",
        ],
    )  # fmt: skip
    def test_delete_routes(
        self,
        rules: list[dict[str, Any]],
        policy: dict[str, Any] | None,
        digest: str | None,
        tag: str | None,
        expected: dict[str, str | None],
    ) -> None:
        """Delete replication yields DELETE jobs (digest or tag), denied cross-account without
        ecr:BatchDeleteImage, none when the rule does not replicate deletes."""
        event = DeleteEvent("use1", "prod/app", digest, tag, "d1")
        routing = route_delete(event, sites(rules, euw1_policy=policy))
        assert {r.key.destination for r in routing.routes} == set(expected)
        for route in routing.routes:
            assert route.key == JobKey(
                "use1", "prod/app", digest or "", tag, route.key.destination, JobKind.DELETE,
                origin="d1",
            )  # fmt: skip
            assert route.delay == 0.0
            reason = expected[route.key.destination]
            if reason is None:
                assert route.denied is None
            else:
                assert route.denied is not None
                assert reason in route.denied
        assert routing.supersedes == ()


class TestAdmitReplication:
    """The run-time check: CreateRepository is needed only for a new repository."""

    @pytest.mark.parametrize(
        ("actions", "exists", "allowed"),
        [
            (["ecr:ReplicateImage"], True, True),
            (["ecr:ReplicateImage"], False, False),
            (["ecr:ReplicateImage", "ecr:CreateRepository"], False, True),
        ],
        ids=["existing-repo", "new-repo-without-create", "new-repo-with-create"],
    )
    def test_create_repository_only_when_new(
        self, actions: list[str], exists: bool, allowed: bool
    ) -> None:
        """ReplicateImage alone admits an existing repository; a new one also needs
        ecr:CreateRepository."""
        policy = {"Version": "2012-10-17", "Statement": [_statement("Allow", "*", actions)]}
        site_map = sites(BOTH_PROD, euw1_policy=policy)
        decision = admit_replication(
            site_map["use1"], site_map["euw1"], "prod/app", repository_exists=exists
        )
        assert decision.allowed is allowed
        if not allowed:
            assert "ecr:CreateRepository" in decision.reason


class TestJobIdentity:
    """A job is its event's: a newer push of the same image is new work, a redelivery is not."""

    def test_pushes_of_one_image_by_two_events_are_two_jobs(self) -> None:
        """The same tag pushed again with the same digest (a rollback A -> B -> A) routes to
        keys that differ only by origin, so the third push is not taken for the first."""
        first = route_push(push(), sites(BOTH_PROD))
        again = route_push(replace(push(), event_id="e3"), sites(BOTH_PROD))
        for one, two in zip(first.routes, again.routes, strict=True):
            assert one.key != two.key
            assert replace(one.key, origin="e3") == two.key

    def test_redelivered_event_routes_to_the_same_keys(self) -> None:
        """The same event (same id) routes to equal keys: its jobs are found, not doubled."""
        assert route_push(push(), sites(BOTH_PROD)) == route_push(push(), sites(BOTH_PROD))

    def test_huge_event_id_is_kept_bounded(self) -> None:
        """A hostile megabyte-long event id becomes a bounded origin (its SHA-256)."""
        routing = route_push(replace(push(), event_id="x" * 1_000_000), sites(BOTH_PROD))
        assert {len(r.key.origin) for r in routing.routes} == {len("sha256:") + 64}

    def test_children_to_supersede_name_no_event(self) -> None:
        """The children an index push supersedes are named by image alone (NO_ORIGIN): their
        own untagged pushes were other events."""
        child = "sha256:" + "c" * 64
        routing = route_push(
            push(tag="v1", media_type=INDEX, references=(child,)), sites(BOTH_PROD)
        )
        assert {k.origin for k in routing.supersedes} == {NO_ORIGIN}


class TestExistenceMatters:
    """Whether the destination must be asked if the repository exists (a tag list)."""

    @pytest.mark.parametrize(
        ("destination", "actions", "matters"),
        [
            ("usw2", ["ecr:ReplicateImage"], False),
            ("euw1", ["ecr:ReplicateImage"], True),
            ("euw1", ["ecr:ReplicateImage", "ecr:CreateRepository"], False),
            ("euw1", ["ecr:BatchDeleteImage"], False),
        ],
        ids=["same-account", "replicate-only", "create-granted", "nothing-granted"],
    )
    def test_existence_matters_only_when_it_changes_the_answer(
        self, destination: str, actions: list[str], matters: bool
    ) -> None:
        """Only a policy granting ReplicateImage without CreateRepository depends on whether
        the repository exists; a same-account destination never does."""
        policy = {"Version": "2012-10-17", "Statement": [_statement("Allow", "*", actions)]}
        site_map = sites(BOTH_PROD, euw1_policy=policy)
        assert existence_matters(site_map["use1"], site_map[destination], "prod/app") is matters


class TestDestinations:
    """The configured sites a source's rules reach, for pushes and for deletes."""

    def test_unconfigured_destination_is_left_out(self) -> None:
        """A rule destination no registry is configured at (a reload race) is skipped."""
        site_map = sites(BOTH_PROD, with_euw1=False)
        reached = destinations(site_map["use1"], site_map, repository="prod/app", tag="v1")
        assert [site.name for site in reached] == ["usw2"]

    def test_deletes_only_through_rules_with_delete_replication(self) -> None:
        """A rule without deleteReplication sends pushes, not deletes."""
        site_map = sites(BOTH_PROD)
        source = site_map["use1"]
        pushes = destinations(source, site_map, repository="prod/app", tag="v1")
        deletes = destinations(source, site_map, repository="prod/app", tag="v1", deletes=True)
        assert [site.name for site in pushes] == ["usw2", "euw1"]
        assert deletes == ()


class TestReplicatedTo:
    def test_destinations_of_every_rule(self) -> None:
        """The registries some rule replicates to: where the daemon's own writes land."""
        rules = [{"destinations": [{"region": "us-west-2", "registryId": SOURCE_ACCOUNT}]}]
        assert replicated_to(sites(rules)) == {"usw2"}

    def test_no_rules_no_destination(self) -> None:
        """Without rules the daemon writes nowhere, so no event is looked up for an echo."""
        assert replicated_to(sites([])) == frozenset()


REGION_OF = {"a": "us-east-1", "b": "us-west-2", "c": "eu-west-1"}


def _pair_sites(links: dict[str, list[str]]) -> dict[str, Site]:
    """Same-account sites a, b, c (one region each), each replicating to the sites `links`
    names."""
    names = sorted({*links, *(n for targets in links.values() for n in targets)})
    return {
        name: Site(
            name, SOURCE_ACCOUNT, REGION_OF[name],
            parse_replication_config({"rules": [{"destinations": [
                {"region": REGION_OF[t], "registryId": SOURCE_ACCOUNT}
                for t in links.get(name, [])
            ]}]} if links.get(name) else {"rules": []}),
            None,
        )
        for name in names
    }  # fmt: skip


class TestCycles:
    @pytest.mark.parametrize(
        ("links", "expected"),
        [
            ({"a": ["b"]}, []),
            ({"a": ["b"], "b": ["a"]}, [("a", "b")]),
            ({"a": ["b"], "b": ["c"], "c": ["a"]}, [("a", "b", "c")]),
            ({"a": ["b", "c"], "b": ["a"], "c": ["a"]}, [("a", "b"), ("a", "c")]),
            ({"a": ["b"], "b": ["c"], "c": ["b"]}, [("b", "c")]),
        ],
        ids=["one-way", "active-active", "ring-of-three", "hub-and-two-spokes", "loop-downstream"],
    )
    def test_cycles(self, links: dict[str, list[str]], expected: list[tuple[str, ...]]) -> None:
        """Every loop between registries is found once, from its first registry."""
        assert cycles(_pair_sites(links)) == expected

    @pytest.mark.parametrize(
        ("links", "expected"),
        [
            ({"a": ["b"]}, set()),
            ({"a": ["b"], "b": ["a"]}, {("a", "b"), ("b", "a")}),
            ({"a": ["b"], "b": ["c"], "c": ["a"]}, set()),
            ({"a": ["b", "c"], "b": ["a"], "c": []}, {("a", "b"), ("b", "a")}),
        ],
        ids=["one-way", "active-active", "ring-of-three", "pair-plus-a-one-way-spoke"],
    )
    def test_returning_routes(
        self, links: dict[str, list[str]], expected: set[tuple[str, str]]
    ) -> None:
        """The routes whose destination replicates straight back (where retention keeps who
        wrote each tag last); a ring's routes do not, nor a one-way spoke."""
        assert returning_routes(_pair_sites(links)) == expected
