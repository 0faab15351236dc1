"""Registry permission policies: the ECR `PutRegistryPolicy` document, evaluated as IAM does.

The subset that matters for replication: `Allow`/`Deny` statements whose `Principal` is an
account root ARN, a bare account id, a list of them, or `*`; `Action` and `Resource` as a string
or a list, with `*` and `?` wildcards (actions compare case-insensitively, as in IAM; resources
case-sensitively). An explicit Deny beats any Allow; without a matching Allow the answer is no.
A principal of the registry's own account needs no policy, as in ECR. `Condition`, `NotAction`,
`NotResource` and `NotPrincipal` are refused when parsed rather than silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from replicator.errors import ConfigError

# The policy language versions IAM accepts; a missing Version means the old 2008 dialect.
POLICY_VERSIONS = frozenset({"2012-10-17", "2008-10-17"})
REPLICATE_IMAGE = "ecr:ReplicateImage"
CREATE_REPOSITORY = "ecr:CreateRepository"
BATCH_DELETE_IMAGE = "ecr:BatchDeleteImage"

_ACCOUNT = re.compile(r"^\d{12}$")
_ROOT_ARN = re.compile(r"^arn:aws:iam::(\d{12}):root$")
_ACTION = re.compile(r"^(\*|[A-Za-z0-9-]+:[A-Za-z0-9*?]+)$")
_UNSUPPORTED = ("Condition", "NotAction", "NotResource", "NotPrincipal")
_POLICY_KEYS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS = frozenset({"Sid", "Effect", "Principal", "Action", "Resource"})
ANY_PRINCIPAL = "*"


class Effect(StrEnum):
    """What a matching statement does."""

    ALLOW = "Allow"
    DENY = "Deny"


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement; `principals` holds account ids or `*`; `label` is the Sid or its position."""

    effect: Effect
    principals: tuple[str, ...]
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    sid: str | None = None
    label: str = ""

    def applies(self, *, principal_account: str, action: str, resource: str) -> bool:
        """Whether this statement speaks about this principal, action and resource."""
        return (
            any(p in (ANY_PRINCIPAL, principal_account) for p in self.principals)
            and any(wildcard_match(a, action, ignore_case=True) for a in self.actions)
            and any(wildcard_match(r, resource) for r in self.resources)
        )


@dataclass(frozen=True, slots=True)
class RegistryPolicy:
    """A destination registry's permission policy."""

    statements: tuple[Statement, ...]
    version: str = "2012-10-17"


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: allowed or not, why, and which statement decided (None when none did)."""

    allowed: bool
    reason: str
    statement: str | None = None


def principal_arn(account: str) -> str:
    """The principal replication acts as: the source account's root."""
    return f"arn:aws:iam::{account}:root"


def repository_arn(region: str, account: str, repository: str) -> str:
    """The ECR ARN of a repository."""
    return f"arn:aws:ecr:{region}:{account}:repository/{repository}"


def wildcard_match(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """IAM wildcards: `*` any run of characters, `?` exactly one, the rest literal; the whole
    `text` must match. No regex: a backtracking one takes O(n^k) steps for k stars against a
    name that almost matches (seconds on the event loop). Here each segment between stars is
    matched at its leftmost place, which is optimal for `*`, so the cost is O(len(pattern) *
    len(text)) at worst."""
    if ignore_case:
        pattern, text = pattern.lower(), text.lower()
    first, *middle_and_last = pattern.split("*")
    if not middle_and_last:  # no star: the lengths must agree and every character match
        return len(first) == len(text) and _segment_at(first, text, 0)
    *middle, last = middle_and_last
    if len(first) + len(last) > len(text) or not _segment_at(first, text, 0):
        return False
    end = len(text) - len(last)
    if not _segment_at(last, text, end):
        return False
    position = len(first)
    for segment in middle:
        found = _find_segment(segment, text, position, end)
        if found < 0:
            return False
        position = found + len(segment)
    return True


def _segment_at(segment: str, text: str, start: int) -> bool:
    """Whether `segment` (literals and `?`) matches `text` at `start`."""
    if start + len(segment) > len(text):
        return False
    return all(c == "?" or c == text[start + i] for i, c in enumerate(segment))


def _find_segment(segment: str, text: str, start: int, end: int) -> int:
    """The leftmost place in `text[start:end]` where `segment` matches, or -1."""
    for place in range(start, end - len(segment) + 1):
        if _segment_at(segment, text, place):
            return place
    return -1


def evaluate(
    policy: RegistryPolicy | None,
    *,
    principal_account: str,
    action: str,
    resource: str,
    resource_account: str,
) -> Decision:
    """Whether the root of `principal_account` may do `action` on `resource` (never raises)."""
    if principal_account == resource_account:
        return Decision(True, f"same account {resource_account}: no policy needed")
    who = principal_arn(principal_account)
    if policy is None:
        return Decision(
            False,
            f"registry {resource_account} has no policy, so it allows no {action} "
            f"for {who} on {resource}",
        )
    allow: Statement | None = None
    for statement in policy.statements:
        if not statement.applies(
            principal_account=principal_account, action=action, resource=resource
        ):
            continue
        if statement.effect is Effect.DENY:
            return Decision(
                False,
                f"registry {resource_account} policy statement {statement.label} denies "
                f"{action} for {who} on {resource}",
                statement.label,
            )
        allow = allow or statement
    if allow is None:
        return Decision(
            False,
            f"registry {resource_account} policy allows no {action} for {who} on {resource}",
        )
    return Decision(
        True,
        f"registry {resource_account} policy statement {allow.label} allows {action} "
        f"for {who} on {resource}",
        allow.label,
    )


def check_replication(
    policy: RegistryPolicy | None,
    *,
    source_account: str,
    dest_account: str,
    dest_region: str,
    repository: str,
    repository_exists: bool,
) -> Decision:
    """ecr:ReplicateImage, and ecr:CreateRepository when the repository must be created."""
    actions = [REPLICATE_IMAGE] if repository_exists else [REPLICATE_IMAGE, CREATE_REPOSITORY]
    resource = repository_arn(dest_region, dest_account, repository)
    decisions = [
        evaluate(
            policy,
            principal_account=source_account,
            action=action,
            resource=resource,
            resource_account=dest_account,
        )
        for action in actions
    ]
    denied = [d for d in decisions if not d.allowed]
    return denied[0] if denied else decisions[0]


def check_delete(
    policy: RegistryPolicy | None,
    *,
    source_account: str,
    dest_account: str,
    dest_region: str,
    repository: str,
) -> Decision:
    """ecr:BatchDeleteImage on the destination repository, for delete replication."""
    return evaluate(
        policy,
        principal_account=source_account,
        action=BATCH_DELETE_IMAGE,
        resource=repository_arn(dest_region, dest_account, repository),
        resource_account=dest_account,
    )


# --- parsing -----------------------------------------------------------------------------------


def parse_policy(doc: object) -> RegistryPolicy:
    """Validate a registry policy document (already JSON-decoded)."""
    body = _mapping(doc, None)
    _known_keys(body, _POLICY_KEYS, None)
    version = body.get("Version", "2008-10-17")
    if not isinstance(version, str) or version not in POLICY_VERSIONS:
        raise ConfigError(
            f"{version!r} is not a policy version ({', '.join(sorted(POLICY_VERSIONS))})",
            field="Version",
        )
    if "Statement" not in body:
        raise ConfigError("Statement is missing", field=None)
    raw = body["Statement"]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ConfigError("needs at least one statement", field="Statement")
    statements = tuple(_parse_statement(s, i) for i, s in enumerate(items))
    sids = [s.sid for s in statements if s.sid]
    duplicates = sorted({sid for sid in sids if sids.count(sid) > 1})
    if duplicates:
        raise ConfigError(f"Sid {duplicates[0]!r} is used twice", field="Statement")
    return RegistryPolicy(statements=statements, version=str(version))


def _parse_statement(doc: object, index: int) -> Statement:
    where = f"Statement[{index}]"
    body = _mapping(doc, where)
    for key in _UNSUPPORTED:
        if key in body:
            raise ConfigError(f"{key} is not supported", field=f"{where}.{key}")
    _known_keys(body, _STATEMENT_KEYS, where)
    sid = body.get("Sid")
    if sid is not None and (not isinstance(sid, str) or not sid):
        raise ConfigError(f"{sid!r} is not a Sid (a non-empty string)", field=f"{where}.Sid")
    effect = body.get("Effect")
    if effect not in (Effect.ALLOW.value, Effect.DENY.value):
        raise ConfigError(f"{effect!r} is not Allow or Deny", field=f"{where}.Effect")
    for key in ("Principal", "Action", "Resource"):
        if key not in body:
            raise ConfigError(f"{key} is missing", field=where)
    actions = _strings(body["Action"], f"{where}.Action")
    for i, action in enumerate(actions):
        if not _ACTION.match(action):
            raise ConfigError(
                f"{action!r} is not an action (service:Name, wildcards allowed)",
                field=f"{where}.Action[{i}]",
            )
    return Statement(
        effect=Effect(str(effect)),
        principals=_parse_principal(body["Principal"], f"{where}.Principal"),
        actions=actions,
        resources=_strings(body["Resource"], f"{where}.Resource"),
        sid=sid,
        label=sid or where,
    )


def _parse_principal(doc: object, where: str) -> tuple[str, ...]:
    if doc == ANY_PRINCIPAL:
        return (ANY_PRINCIPAL,)
    body = _mapping(doc, where)
    _known_keys(body, frozenset({"AWS"}), where)
    if "AWS" not in body:
        raise ConfigError('needs "AWS" (an account root ARN, a list of them) or "*"', field=where)
    accounts = []
    for i, text in enumerate(_strings(body["AWS"], f"{where}.AWS")):
        root = _ROOT_ARN.match(text)
        if root:
            accounts.append(root.group(1))
        elif text == ANY_PRINCIPAL or _ACCOUNT.match(text):
            accounts.append(text)
        else:
            raise ConfigError(
                f"{text!r} is not arn:aws:iam::<12-digit account>:root, an account id or *; "
                "replication acts as the source account's root",
                field=f"{where}.AWS[{i}]",
            )
    return tuple(accounts)


def _strings(doc: object, where: str) -> tuple[str, ...]:
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise ConfigError("must not be empty", field=where)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{item!r} is not a non-empty string", field=f"{where}[{i}]")
    return tuple(str(item) for item in items)


def _mapping(doc: object, where: str | None) -> Mapping[str, object]:
    if not isinstance(doc, Mapping):
        raise ConfigError(f"must be an object, not {type(doc).__name__}", field=where)
    return doc


def _known_keys(body: Mapping[str, object], known: frozenset[str], where: str | None) -> None:
    unknown = sorted(str(k) for k in body if k not in known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}",
            field=where,
        )
