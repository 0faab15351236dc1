"""Replication configuration: the ECR JSON as users write it, and where a push must go.

The document is ECR's `PutReplicationConfiguration` body, with or without the outer
`replicationConfiguration` key, plus the extensions of ARCHITECTURE.md §4:
`excludeRepositoryFilters`, `tagFilters`, filter types `GLOB`, `REGEX`, `EXACT`, and
`deleteReplication`. Matching decisions documented here, once:

- `REGEX` filters use `re.search`: a filter matches anywhere unless the user anchors it
  (`^v[0-9]+` means "starts with v and a digit", as ECR users write it).
- `GLOB` filters use `fnmatch.fnmatchcase` semantics (`*`, `?`, `[seq]`, `[!seq]`, case-sensitive).
- A push without a tag (digest only) does NOT match a rule that has `tagFilters`: such a rule
  selects images by tag, and an untagged image has none to select it by.
- One hop only: a destination receives the image under the same repository name; what it receives
  is not matched again. The source itself is never a destination.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from replicator.errors import ConfigError

# ECR limits (PutReplicationConfiguration): rules per configuration, filters per rule (all kinds
# counted together), destinations per rule and unique destinations across all rules.
MAX_RULES = 10
MAX_FILTERS_PER_RULE = 100
MAX_DESTINATIONS_PER_RULE = 25
MAX_UNIQUE_DESTINATIONS = 25
# ECR RepositoryFilter.filter length bounds; the upper bound also keeps regular expressions small.
MIN_FILTER_LENGTH = 1
MAX_FILTER_LENGTH = 256

# ECR's repository filter character set; tags add uppercase (the OCI tag grammar) and no '/'.
_REPOSITORY_CHARS = re.compile(r"^[a-z0-9_\-./]+$")
_TAG_CHARS = re.compile(r"^[A-Za-z0-9_\-.]+$")
_REPOSITORY_GLOB_CHARS = re.compile(r"^[a-z0-9_\-./*?\[\]!]+$")
_TAG_GLOB_CHARS = re.compile(r"^[A-Za-z0-9_\-.*?\[\]!]+$")
# A quantified group that itself contains a quantifier, e.g. `(a+)+` or `(\w*x?)*`: the classic
# shape of catastrophic backtracking. Python's `re` has no timeout, so such filters are refused.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,)")

ACCOUNT_RE = re.compile(r"^\d{12}$")
# Four letters for the European sovereign cloud's partition (eusc-de-east-1).
REGION_RE = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-\d+$")

_ROOT_KEYS = frozenset({"rules"})
_RULE_KEYS = frozenset(
    {
        "destinations",
        "repositoryFilters",
        "excludeRepositoryFilters",
        "tagFilters",
        "deleteReplication",
    }
)
_FILTER_KEYS = frozenset({"filter", "filterType"})
_DESTINATION_KEYS = frozenset({"region", "registryId"})
_DELETE_KEYS = frozenset({"enabled"})


class FilterType(StrEnum):
    """How a filter's text is compared with a repository name or tag."""

    PREFIX_MATCH = "PREFIX_MATCH"
    GLOB = "GLOB"
    REGEX = "REGEX"
    EXACT = "EXACT"


@dataclass(frozen=True, slots=True)
class Filter:
    """One repository or tag filter; validated when parsed, so `matches` never raises."""

    filter: str
    filter_type: FilterType

    def matches(self, value: str) -> bool:
        """Whether `value` (a repository name or tag) is selected by this filter."""
        if self.filter_type is FilterType.PREFIX_MATCH:
            return value.startswith(self.filter)
        if self.filter_type is FilterType.EXACT:
            return value == self.filter
        if self.filter_type is FilterType.GLOB:
            return fnmatch.fnmatchcase(value, self.filter)
        return _compiled(self.filter).search(value) is not None

    def describe(self) -> str:
        """Short human text, e.g. `prefix "prod"` or `regex "^v[0-9]+"`."""
        word = {
            FilterType.PREFIX_MATCH: "prefix",
            FilterType.GLOB: "glob",
            FilterType.REGEX: "regex",
            FilterType.EXACT: "exactly",
        }[self.filter_type]
        return f'{word} "{self.filter}"'


def _compiled(pattern: str) -> re.Pattern[str]:
    # `re` keeps its own cache of compiled patterns; filters were compiled once when parsed.
    return re.compile(pattern)


@dataclass(frozen=True, slots=True, order=True)
class Destination:
    """A registry identified as ECR does: region and 12-digit account (registry id)."""

    region: str
    registry_id: str

    def __str__(self) -> str:
        return f"{self.registry_id}/{self.region}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One replication rule: which repositories and tags go to which destinations."""

    destinations: tuple[Destination, ...]
    repository_filters: tuple[Filter, ...] = ()
    exclude_repository_filters: tuple[Filter, ...] = ()
    tag_filters: tuple[Filter, ...] = ()
    delete_replication: bool = False

    def selects_repository(self, repository: str) -> bool:
        """Whether the repository filters take `repository` and the exclusions leave it."""
        if self.repository_filters and not any(
            f.matches(repository) for f in self.repository_filters
        ):
            return False
        return not any(f.matches(repository) for f in self.exclude_repository_filters)

    def selects(self, repository: str, tag: str | None) -> bool:
        """Whether a push of `repository[:tag]` falls under this rule (see the module docstring)."""
        if not self.selects_repository(repository):
            return False
        if self.tag_filters:
            return tag is not None and any(f.matches(tag) for f in self.tag_filters)
        return True


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """A source registry's replication rules; no rules = nothing is replicated."""

    rules: tuple[Rule, ...] = ()

    @property
    def destinations(self) -> tuple[Destination, ...]:
        """Every destination named by any rule, de-duplicated, in order of appearance."""
        return _unique(d for rule in self.rules for d in rule.destinations)


def _unique(destinations: Iterable[Destination]) -> tuple[Destination, ...]:
    return tuple(dict.fromkeys(destinations))


def match(
    config: ReplicationConfig, *, source: Destination, repository: str, tag: str | None
) -> tuple[Destination, ...]:
    """Destinations a push of `repository[:tag]` at `source` goes to, de-duplicated, in order."""
    return _unique(
        d
        for rule in config.rules
        if rule.selects(repository, tag)
        for d in rule.destinations
        if d != source
    )


def match_deletes(
    config: ReplicationConfig, *, source: Destination, repository: str, tag: str | None
) -> tuple[Destination, ...]:
    """Like `match`, restricted to rules with `deleteReplication` enabled."""
    deleting = ReplicationConfig(tuple(r for r in config.rules if r.delete_replication))
    return match(deleting, source=source, repository=repository, tag=tag)


# --- parsing -----------------------------------------------------------------------------------


def parse_replication_config(doc: object) -> ReplicationConfig:
    """Validate an ECR replication configuration document (already JSON-decoded)."""
    body = _mapping(doc, "")
    if "replicationConfiguration" in body:
        if len(body) != 1:
            extra = sorted(k for k in body if k != "replicationConfiguration")
            raise ConfigError(f"unknown key(s) {', '.join(extra)} beside replicationConfiguration")
        body = _mapping(body["replicationConfiguration"], "replicationConfiguration")
    _known_keys(body, _ROOT_KEYS, "")
    rules_doc = body.get("rules", [])
    if not isinstance(rules_doc, list):
        raise ConfigError("must be a list of rules", field="rules")
    if len(rules_doc) > MAX_RULES:
        raise ConfigError(f"{len(rules_doc)} rules, ECR allows at most {MAX_RULES}", field="rules")
    rules = tuple(_parse_rule(r, f"rules[{i}]") for i, r in enumerate(rules_doc))
    config = ReplicationConfig(rules)
    unique = config.destinations
    if len(unique) > MAX_UNIQUE_DESTINATIONS:
        raise ConfigError(
            f"{len(unique)} unique destinations across rules, "
            f"ECR allows at most {MAX_UNIQUE_DESTINATIONS}",
            field="rules",
        )
    return config


def _parse_rule(doc: object, where: str) -> Rule:
    body = _mapping(doc, where)
    _known_keys(body, _RULE_KEYS, where)
    if "destinations" not in body:
        raise ConfigError("destinations is missing", field=where)
    destinations_doc = _list(body["destinations"], f"{where}.destinations")
    if not destinations_doc:
        raise ConfigError("at least one destination is needed", field=f"{where}.destinations")
    if len(destinations_doc) > MAX_DESTINATIONS_PER_RULE:
        raise ConfigError(
            f"{len(destinations_doc)} destinations, ECR allows at most "
            f"{MAX_DESTINATIONS_PER_RULE} per rule",
            field=f"{where}.destinations",
        )
    destinations = tuple(
        _parse_destination(d, f"{where}.destinations[{i}]") for i, d in enumerate(destinations_doc)
    )
    repository = _parse_filters(body, "repositoryFilters", where, for_tags=False)
    exclude = _parse_filters(body, "excludeRepositoryFilters", where, for_tags=False)
    tags = _parse_filters(body, "tagFilters", where, for_tags=True)
    count = len(repository) + len(exclude) + len(tags)
    if count > MAX_FILTERS_PER_RULE:
        raise ConfigError(
            f"{count} filters, ECR allows at most {MAX_FILTERS_PER_RULE} per rule "
            "(repository, exclude and tag filters together)",
            field=where,
        )
    return Rule(
        destinations=destinations,
        repository_filters=repository,
        exclude_repository_filters=exclude,
        tag_filters=tags,
        delete_replication=_parse_delete(body.get("deleteReplication"), where),
    )


def _parse_destination(doc: object, where: str) -> Destination:
    body = _mapping(doc, where)
    _known_keys(body, _DESTINATION_KEYS, where)
    region = body.get("region")
    registry_id = body.get("registryId")
    if not isinstance(region, str) or not REGION_RE.match(region):
        raise ConfigError(f"{region!r} is not a region (like us-east-1)", field=f"{where}.region")
    if not isinstance(registry_id, str) or not ACCOUNT_RE.match(registry_id):
        raise ConfigError(
            f"{registry_id!r} is not a registry id (a 12-digit account, as a string)",
            field=f"{where}.registryId",
        )
    return Destination(region=region, registry_id=registry_id)


def _parse_filters(
    body: Mapping[str, object], key: str, where: str, *, for_tags: bool
) -> tuple[Filter, ...]:
    if key not in body:
        return ()
    items = _list(body[key], f"{where}.{key}")
    return tuple(
        _parse_filter(item, f"{where}.{key}[{i}]", for_tags=for_tags)
        for i, item in enumerate(items)
    )


def _parse_filter(doc: object, where: str, *, for_tags: bool) -> Filter:
    body = _mapping(doc, where)
    _known_keys(body, _FILTER_KEYS, where)
    text = body.get("filter")
    kind = body.get("filterType")
    allowed = ", ".join(t.value for t in FilterType)
    if kind is None:
        raise ConfigError(f"filterType is missing (one of {allowed})", field=where)
    if not isinstance(kind, str) or kind not in FilterType.__members__:
        raise ConfigError(f"{kind!r} is not one of {allowed}", field=f"{where}.filterType")
    filter_type = FilterType(kind)
    if not isinstance(text, str):
        raise ConfigError("must be a string", field=f"{where}.filter")
    if not MIN_FILTER_LENGTH <= len(text) <= MAX_FILTER_LENGTH:
        raise ConfigError(
            f"is {len(text)} characters, allowed {MIN_FILTER_LENGTH} to {MAX_FILTER_LENGTH}",
            field=f"{where}.filter",
        )
    _check_filter_text(text, filter_type, f"{where}.filter", for_tags=for_tags)
    return Filter(filter=text, filter_type=filter_type)


def _check_filter_text(text: str, filter_type: FilterType, where: str, *, for_tags: bool) -> None:
    if filter_type is FilterType.REGEX:
        try:
            re.compile(text)
        except re.error as exc:
            raise ConfigError(
                f"{text!r} is not a valid regular expression: {exc}", field=where
            ) from exc
        if _NESTED_QUANTIFIER.search(text):
            raise ConfigError(
                f"{text!r} nests quantifiers (like (a+)+), which can backtrack for minutes; "
                "rewrite it without a repeated group that itself repeats",
                field=where,
            )
        return
    glob = filter_type is FilterType.GLOB
    if for_tags:
        chars = _TAG_GLOB_CHARS if glob else _TAG_CHARS
        allowed = "letters, digits, '_', '-', '.'"
    else:
        chars = _REPOSITORY_GLOB_CHARS if glob else _REPOSITORY_CHARS
        allowed = "lowercase letters, digits, '_', '-', '.', '/'"
    if glob:
        allowed += " and the wildcards * ? [ ] !"
    if not chars.match(text):
        raise ConfigError(f"{text!r} has characters outside {allowed}", field=where)


def _parse_delete(doc: object, where: str) -> bool:
    if doc is None:
        return False
    field = f"{where}.deleteReplication"
    body = _mapping(doc, field)
    _known_keys(body, _DELETE_KEYS, field)
    enabled = body.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError("must be true or false", field=f"{field}.enabled")
    return enabled


def _mapping(doc: object, where: str) -> Mapping[str, object]:
    if not isinstance(doc, Mapping):
        raise ConfigError(f"must be an object, not {type(doc).__name__}", field=where or None)
    return doc


def _list(doc: object, where: str) -> Sequence[object]:
    if not isinstance(doc, list):
        raise ConfigError(f"must be a list, not {type(doc).__name__}", field=where)
    return doc


def _known_keys(body: Mapping[str, object], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in body if k not in known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}",
            field=where or None,
        )
