"""Replication rules: parsing the ECR document, its limits, and matching pushes to destinations."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.domain.routing.rules import (
    Destination,
    Filter,
    FilterType,
    ReplicationConfig,
    Rule,
    match,
    match_deletes,
    parse_replication_config,
)
from replicator.errors import ConfigError

USE1 = Destination("us-east-1", "111122223333")
USW2 = Destination("us-west-2", "111122223333")
EUW1 = Destination("eu-west-1", "444455556666")


def _dest(region: str, account: str = "111122223333") -> dict[str, str]:
    return {"region": region, "registryId": account}


def _filters(n: int, kind: str = "PREFIX_MATCH") -> list[dict[str, str]]:
    return [{"filter": f"f{i}", "filterType": kind} for i in range(n)]


def _rule(**extra: Any) -> dict[str, Any]:
    return {"destinations": [_dest("us-west-2")], **extra}


class TestFilter:
    @pytest.mark.parametrize(
        ("kind", "pattern", "value", "expected"),
        [
            (FilterType.PREFIX_MATCH, "prod", "prod/app", True),
            (FilterType.PREFIX_MATCH, "prod", "production", True),
            (FilterType.PREFIX_MATCH, "prod", "dev/prod", False),
            (FilterType.EXACT, "prod/app", "prod/app", True),
            (FilterType.EXACT, "prod/app", "prod/app2", False),
            (FilterType.GLOB, "prod/*", "prod/app", True),
            (FilterType.GLOB, "prod/*", "prod/team/app", True),
            (FilterType.GLOB, "prod/?pp", "prod/app", True),
            (FilterType.GLOB, "prod/[ab]pp", "prod/cpp", False),
            (FilterType.GLOB, "prod/[!ab]pp", "prod/cpp", True),
            (FilterType.GLOB, "v*", "V1", False),
            (FilterType.REGEX, "^v[0-9]+\\.", "v1.2", True),
            (FilterType.REGEX, "^v[0-9]+\\.", "xv1.2", False),
            (FilterType.REGEX, "rc", "v1.0-rc1", True),
            (FilterType.REGEX, "^latest$", "latest-1", False),
        ],
        ids=[
            "prefix-path",
            "prefix-word",
            "prefix-not-inside",
            "exact-equal",
            "exact-longer",
            "glob-star",
            "glob-star-crosses-slash",
            "glob-question",
            "glob-class-miss",
            "glob-negated-class",
            "glob-case-sensitive",
            "regex-anchored",
            "regex-anchor-respected",
            "regex-search-unanchored",
            "regex-full-anchors",
        ],
    )
    def test_matches(self, kind: FilterType, pattern: str, value: str, expected: bool) -> None:
        """Each filter type compares a value the documented way."""
        assert Filter(pattern, kind).matches(value) is expected


class TestParse:
    def test_outer_key_optional(self) -> None:
        """The document parses the same with and without the replicationConfiguration wrapper."""
        body = {"rules": [_rule(repositoryFilters=_filters(1))]}
        assert parse_replication_config(body) == parse_replication_config(
            {"replicationConfiguration": body}
        )

    def test_full_rule(self) -> None:
        """Every extension of the ECR format is read into the rule."""
        config = parse_replication_config(
            {
                "rules": [
                    {
                        "destinations": [_dest("us-west-2"), _dest("eu-west-1", "444455556666")],
                        "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}],
                        "excludeRepositoryFilters": [
                            {"filter": "prod/tmp-*", "filterType": "GLOB"}
                        ],
                        "tagFilters": [{"filter": "^v[0-9]+\\.", "filterType": "REGEX"}],
                        "deleteReplication": {"enabled": True},
                    }
                ]
            }
        )
        assert config.rules == (
            Rule(
                destinations=(USW2, EUW1),
                repository_filters=(Filter("prod", FilterType.PREFIX_MATCH),),
                exclude_repository_filters=(Filter("prod/tmp-*", FilterType.GLOB),),
                tag_filters=(Filter("^v[0-9]+\\.", FilterType.REGEX),),
                delete_replication=True,
            ),
        )

    def test_empty_rules(self) -> None:
        """An empty document replicates nothing."""
        assert parse_replication_config({"rules": []}) == ReplicationConfig(())

    @pytest.mark.parametrize(
        ("doc", "field", "text"),
        [
            ([], None, "must be an object"),
            ({"rulez": []}, None, "unknown key(s) rulez"),
            ({"replicationConfiguration": {}, "x": 1}, None, "unknown key(s) x"),
            ({"rules": {}}, "rules", "must be a list"),
            ({"rules": [_rule()] * 11}, "rules", "11 rules, ECR allows at most 10"),
            ({"rules": [{}]}, "rules[0]", "destinations is missing"),
            ({"rules": [{"destinations": []}]}, "rules[0].destinations", "at least one"),
            (
                {"rules": [_rule(colour="red")]},
                "rules[0]",
                "unknown key(s) colour",
            ),
            (
                {"rules": [{"destinations": [_dest("us-west-2"), _dest("mars")]}]},
                "rules[0].destinations[1].region",
                "'mars' is not a region",
            ),
            (
                {"rules": [{"destinations": [_dest("us-west-2", "1111222233334")]}]},
                "rules[0].destinations[0].registryId",
                "not a registry id",
            ),
            (
                {"rules": [{"destinations": [{"region": "us-west-2", "registryId": 1}]}]},
                "rules[0].destinations[0].registryId",
                "not a registry id",
            ),
            (
                {"rules": [{"destinations": [{**_dest("us-west-2"), "x": 1}]}]},
                "rules[0].destinations[0]",
                "unknown key(s) x",
            ),
            (
                {"rules": [{"destinations": [_dest(f"us-west-{i}") for i in range(26)]}]},
                "rules[0].destinations",
                "26 destinations, ECR allows at most 25 per rule",
            ),
            (
                {
                    "rules": [
                        {"destinations": [_dest(f"us-west-{i}") for i in range(20)]},
                        {"destinations": [_dest(f"eu-west-{i}") for i in range(6)]},
                    ]
                },
                "rules",
                "26 unique destinations across rules",
            ),
            (
                {"rules": [_rule(repositoryFilters=_filters(101))]},
                "rules[0]",
                "101 filters, ECR allows at most 100",
            ),
            (
                {
                    "rules": [
                        _rule(
                            repositoryFilters=_filters(50),
                            excludeRepositoryFilters=_filters(30),
                            tagFilters=_filters(21),
                        )
                    ]
                },
                "rules[0]",
                "101 filters",
            ),
            (
                {"rules": [_rule(repositoryFilters=[{"filter": "", "filterType": "EXACT"}])]},
                "rules[0].repositoryFilters[0].filter",
                "is 0 characters, allowed 1 to 256",
            ),
            (
                {
                    "rules": [
                        _rule(repositoryFilters=[{"filter": "a" * 257, "filterType": "EXACT"}])
                    ]
                },
                "rules[0].repositoryFilters[0].filter",
                "is 257 characters",
            ),
            (
                {
                    "rules": [
                        _rule(repositoryFilters=[{"filter": "Prod", "filterType": "PREFIX_MATCH"}])
                    ]
                },
                "rules[0].repositoryFilters[0].filter",
                "'Prod' has characters outside lowercase letters",
            ),
            (
                {"rules": [_rule(repositoryFilters=[{"filter": "prod/*", "filterType": "EXACT"}])]},
                "rules[0].repositoryFilters[0].filter",
                "has characters outside",
            ),
            (
                {"rules": [_rule(tagFilters=[{"filter": "v1/x", "filterType": "PREFIX_MATCH"}])]},
                "rules[0].tagFilters[0].filter",
                "outside letters, digits",
            ),
            (
                {"rules": [_rule(repositoryFilters=[{"filter": "prod", "filterType": "SUFFIX"}])]},
                "rules[0].repositoryFilters[0].filterType",
                "'SUFFIX' is not one of PREFIX_MATCH, GLOB, REGEX, EXACT",
            ),
            (
                {"rules": [_rule(repositoryFilters=[{"filter": "prod"}])]},
                "rules[0].repositoryFilters[0]",
                "filterType is missing",
            ),
            (
                {"rules": [_rule(repositoryFilters=[{"filter": 3, "filterType": "EXACT"}])]},
                "rules[0].repositoryFilters[0].filter",
                "must be a string",
            ),
            (
                {"rules": [_rule(tagFilters=[{"filter": "^v[0-9", "filterType": "REGEX"}])]},
                "rules[0].tagFilters[0].filter",
                "is not a valid regular expression",
            ),
            (
                {"rules": [_rule(tagFilters=[{"filter": "^(a+)+$", "filterType": "REGEX"}])]},
                "rules[0].tagFilters[0].filter",
                "nests quantifiers",
            ),
            (
                {"rules": [_rule(deleteReplication={"enabled": "yes"})]},
                "rules[0].deleteReplication.enabled",
                "must be true or false",
            ),
            (
                {"rules": [_rule(deleteReplication=True)]},
                "rules[0].deleteReplication",
                "must be an object",
            ),
        ],
        ids=[
            "not-object",
            "unknown-root-key",
            "unknown-key-beside-wrapper",
            "rules-not-list",
            "eleven-rules",
            "no-destinations-key",
            "empty-destinations",
            "unknown-rule-key",
            "bad-region",
            "thirteen-digit-account",
            "numeric-account",
            "unknown-destination-key",
            "26-destinations-in-rule",
            "26-unique-destinations",
            "101-repository-filters",
            "101-filters-all-kinds",
            "empty-filter",
            "long-filter",
            "uppercase-repository-prefix",
            "wildcard-in-exact",
            "slash-in-tag",
            "unknown-filter-type",
            "missing-filter-type",
            "filter-not-string",
            "regex-does-not-compile",
            "regex-nested-quantifier",
            "delete-enabled-not-bool",
            "delete-not-object",
        ],
    )
    def test_rejects(self, doc: object, field: str | None, text: str) -> None:
        """A document breaking the format or an ECR limit names the field and what is wrong."""
        with pytest.raises(ConfigError) as caught:
            parse_replication_config(doc)
        assert caught.value.field == field
        assert text in str(caught.value)

    @pytest.mark.parametrize(
        "doc",
        [
            {"rules": [_rule()] * 10},
            {"rules": [_rule(repositoryFilters=_filters(100))]},
            {"rules": [{"destinations": [_dest(f"us-west-{i}") for i in range(25)]}]},
            {"rules": [_rule(repositoryFilters=[{"filter": "a" * 256, "filterType": "EXACT"}])]},
            {"rules": [_rule(tagFilters=[{"filter": "V1.*-RC[0-9]", "filterType": "GLOB"}])]},
        ],
        ids=[
            "ten-rules",
            "100-filters",
            "25-destinations",
            "256-char-filter",
            "uppercase-tag-glob",
        ],
    )
    def test_accepts_at_limit(self, doc: object) -> None:
        """Values exactly at an ECR limit are accepted."""
        assert parse_replication_config(doc).rules


def _config(*rules: Rule) -> ReplicationConfig:
    return ReplicationConfig(rules)


PROD = Filter("prod", FilterType.PREFIX_MATCH)
TMP = Filter("prod/tmp-*", FilterType.GLOB)
SEMVER = Filter("^v[0-9]+\\.", FilterType.REGEX)


class TestMatch:
    @pytest.mark.parametrize(
        ("rules", "repository", "tag", "expected"),
        [
            ((Rule((USW2,)),), "any/thing", "x", (USW2,)),
            ((Rule((USW2,), repository_filters=(PROD,)),), "prod/app", "1", (USW2,)),
            ((Rule((USW2,), repository_filters=(PROD,)),), "dev/app", "1", ()),
            (
                (Rule((USW2,), repository_filters=(PROD, Filter("dev", FilterType.EXACT))),),
                "dev",
                None,
                (USW2,),
            ),
            (
                (Rule((USW2,), repository_filters=(PROD,), exclude_repository_filters=(TMP,)),),
                "prod/tmp-1",
                "1",
                (),
            ),
            ((Rule((USW2,), exclude_repository_filters=(TMP,)),), "prod/app", "1", (USW2,)),
            ((Rule((USW2,), tag_filters=(SEMVER,)),), "prod/app", "v1.2", (USW2,)),
            ((Rule((USW2,), tag_filters=(SEMVER,)),), "prod/app", "latest", ()),
            ((Rule((USW2,), tag_filters=(SEMVER,)),), "prod/app", None, ()),
            ((Rule((USW2, EUW1)), Rule((EUW1, USW2))), "a", "1", (USW2, EUW1)),
            ((Rule((EUW1,), repository_filters=(PROD,)), Rule((USW2,))), "a", "1", (USW2,)),
            ((Rule((USE1, USW2)),), "a", "1", (USW2,)),
            ((), "a", "1", ()),
        ],
        ids=[
            "no-filters-match-all",
            "prefix-match",
            "prefix-miss",
            "any-of-several-filters",
            "excluded",
            "exclude-only-rule",
            "tag-filter-match",
            "tag-filter-miss",
            "untagged-skips-tag-rules",
            "dedup-stable-order",
            "second-rule-only",
            "never-source",
            "no-rules",
        ],
    )
    def test_match(
        self,
        rules: tuple[Rule, ...],
        repository: str,
        tag: str | None,
        expected: tuple[Destination, ...],
    ) -> None:
        """A push goes to each destination of each rule selecting it, once, never to the source."""
        assert match(_config(*rules), source=USE1, repository=repository, tag=tag) == expected

    def test_match_deletes_only_enabled_rules(self) -> None:
        """Deletes follow only the rules that enable deleteReplication."""
        config = _config(Rule((USW2,)), Rule((EUW1,), delete_replication=True))
        assert match_deletes(config, source=USE1, repository="a", tag="1") == (EUW1,)
        assert match(config, source=USE1, repository="a", tag="1") == (USW2, EUW1)

    def test_destinations_unique(self) -> None:
        """The configuration's destination list names each destination once."""
        assert _config(Rule((USW2, EUW1)), Rule((USW2,))).destinations == (USW2, EUW1)


_EVERY_KIND = _config(
    Rule(
        (USW2,),
        repository_filters=(
            PROD,
            Filter("a*[b-d]?", FilterType.GLOB),
            Filter("x", FilterType.EXACT),
        ),
        exclude_repository_filters=(Filter("(^|/)tmp", FilterType.REGEX),),
        tag_filters=(SEMVER, Filter("[!x]*", FilterType.GLOB)),
    ),
    Rule((EUW1,), delete_replication=True),
)


@given(repository=st.text(max_size=300), tag=st.none() | st.text(max_size=200))
def test_match_never_raises(repository: str, tag: str | None) -> None:
    """Matching arbitrary repository names and tags returns destinations and never raises."""
    found = match(_EVERY_KIND, source=USE1, repository=repository, tag=tag)
    assert EUW1 in found
    assert USE1 not in found
    assert match_deletes(_EVERY_KIND, source=USE1, repository=repository, tag=tag) == (EUW1,)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
_RULE_KEYS = st.sampled_from(
    [
        "destinations",
        "repositoryFilters",
        "excludeRepositoryFilters",
        "tagFilters",
        "deleteReplication",
    ]
)


@given(
    doc=_JSON
    | st.fixed_dictionaries({"rules": st.lists(st.dictionaries(_RULE_KEYS, _JSON), max_size=3)})
)
def test_parse_never_raises_other_errors(doc: object) -> None:
    """Any JSON document either parses or raises ConfigError, never another exception."""
    try:
        parsed = parse_replication_config(doc)
    except ConfigError:
        return
    assert isinstance(parsed, ReplicationConfig)
