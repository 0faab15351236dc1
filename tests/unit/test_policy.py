"""Registry permission policies: parsing the ECR document and evaluating it as IAM does."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.domain.routing.policy import (
    Decision,
    RegistryPolicy,
    check_delete,
    check_replication,
    evaluate,
    parse_policy,
    principal_arn,
    repository_arn,
    wildcard_match,
)
from replicator.errors import ConfigError

SRC = "111122223333"
DST = "444455556666"
OTHER = "777788889999"
ROOT = f"arn:aws:iam::{SRC}:root"
REPOS = f"arn:aws:ecr:eu-west-1:{DST}:repository/*"
PROD_APP = repository_arn("eu-west-1", DST, "prod/app")
DEV_APP = repository_arn("eu-west-1", DST, "dev/app")


def _statement(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Sid": "Replication",
        "Effect": "Allow",
        "Principal": {"AWS": ROOT},
        "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
        "Resource": REPOS,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def _policy(*statements: dict[str, Any]) -> RegistryPolicy:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)})


def _allowed(policy: RegistryPolicy | None, action: str, resource: str = PROD_APP) -> bool:
    return evaluate(
        policy, principal_account=SRC, action=action, resource=resource, resource_account=DST
    ).allowed


class TestEvaluate:
    @pytest.mark.parametrize(
        ("statements", "action", "resource", "expected"),
        [
            ((_statement(),), "ecr:ReplicateImage", PROD_APP, True),
            ((_statement(),), "ecr:BatchDeleteImage", PROD_APP, False),
            ((_statement(Action="ecr:*"),), "ecr:BatchDeleteImage", PROD_APP, True),
            ((_statement(Action="*"),), "ecr:ReplicateImage", PROD_APP, True),
            ((_statement(Action="ecr:Replicate*"),), "ecr:ReplicateImage", PROD_APP, True),
            ((_statement(Action="ecr:?eplicateImage"),), "ecr:ReplicateImage", PROD_APP, True),
            ((_statement(Action="ecr:?ReplicateImage"),), "ecr:ReplicateImage", PROD_APP, False),
            ((_statement(Action="ECR:replicateimage"),), "ecr:ReplicateImage", PROD_APP, True),
            ((_statement(Resource=REPOS.upper()),), "ecr:ReplicateImage", PROD_APP, False),
            ((_statement(Resource="*"),), "ecr:ReplicateImage", PROD_APP, True),
            (
                (_statement(Resource=repository_arn("eu-west-1", DST, "prod/*")),),
                "ecr:ReplicateImage",
                DEV_APP,
                False,
            ),
            (
                (_statement(Resource=repository_arn("eu-west-1", DST, "prod/a??")),),
                "ecr:ReplicateImage",
                PROD_APP,
                True,
            ),
            (
                (_statement(Resource=repository_arn("us-east-1", DST, "*")),),
                "ecr:ReplicateImage",
                PROD_APP,
                False,
            ),
            (
                (_statement(), _statement(Sid="NoDev", Effect="Deny", Resource=DEV_APP)),
                "ecr:ReplicateImage",
                DEV_APP,
                False,
            ),
            (
                (_statement(Sid="DenyAll", Effect="Deny", Action="ecr:*"), _statement()),
                "ecr:ReplicateImage",
                PROD_APP,
                False,
            ),
            (
                (_statement(Sid="Other", Effect="Deny", Principal={"AWS": OTHER}), _statement()),
                "ecr:ReplicateImage",
                PROD_APP,
                True,
            ),
            ((_statement(Principal="*"),), "ecr:ReplicateImage", PROD_APP, True),
            ((_statement(Principal={"AWS": "*"}),), "ecr:ReplicateImage", PROD_APP, True),
            ((_statement(Principal={"AWS": SRC}),), "ecr:ReplicateImage", PROD_APP, True),
            (
                (_statement(Principal={"AWS": [principal_arn(OTHER), ROOT]}),),
                "ecr:ReplicateImage",
                PROD_APP,
                True,
            ),
            (
                (_statement(Principal={"AWS": principal_arn(OTHER)}),),
                "ecr:ReplicateImage",
                PROD_APP,
                False,
            ),
        ],
        ids=[
            "allow-listed-action",
            "unlisted-action",
            "ecr-star",
            "star",
            "action-prefix-star",
            "action-question",
            "question-is-one-char",
            "action-case-insensitive",
            "resource-case-sensitive",
            "resource-star",
            "resource-prefix-miss",
            "resource-question",
            "other-region",
            "deny-wins-after-allow",
            "deny-wins-before-allow",
            "deny-for-other-principal",
            "principal-star",
            "principal-aws-star",
            "principal-bare-account",
            "principal-list",
            "other-principal",
        ],
    )
    def test_decision(
        self, statements: tuple[dict[str, Any], ...], action: str, resource: str, expected: bool
    ) -> None:
        """IAM logic: a matching Allow is needed and an explicit Deny beats it."""
        assert _allowed(_policy(*statements), action, resource) is expected

    def test_same_account_needs_no_policy(self) -> None:
        """A principal of the registry's own account is allowed without any policy."""
        decision = evaluate(
            None, principal_account=DST, action="ecr:ReplicateImage", resource=PROD_APP,
            resource_account=DST,
        )  # fmt: skip
        assert decision.allowed
        assert decision.statement is None

    def test_no_policy_denies_cross_account(self) -> None:
        """Without a policy another account is refused, and the reason says so."""
        decision = evaluate(
            None, principal_account=SRC, action="ecr:ReplicateImage", resource=PROD_APP,
            resource_account=DST,
        )  # fmt: skip
        assert not decision.allowed
        assert "has no policy" in decision.reason

    def test_missing_action_reason(self) -> None:
        """A denial for lack of an Allow names the registry, the action, principal and resource."""
        policy = _policy(_statement(Resource=repository_arn("eu-west-1", DST, "prod/*")))
        decision = check_replication(
            policy, source_account=SRC, dest_account=DST, dest_region="eu-west-1",
            repository="dev/app", repository_exists=False,
        )  # fmt: skip
        assert decision == Decision(
            False,
            f"registry {DST} policy allows no ecr:ReplicateImage for {ROOT} on {DEV_APP}",
        )

    def test_deny_reason_names_sid(self) -> None:
        """A denial by an explicit Deny names the statement."""
        policy = _policy(_statement(), _statement(Sid="NoDev", Effect="Deny", Resource=DEV_APP))
        decision = evaluate(
            policy, principal_account=SRC, action="ecr:ReplicateImage", resource=DEV_APP,
            resource_account=DST,
        )  # fmt: skip
        assert decision.statement == "NoDev"
        assert "statement NoDev denies ecr:ReplicateImage" in decision.reason

    def test_statement_without_sid_named_by_position(self) -> None:
        """A statement without Sid is named by its position in the reasons."""
        decision = evaluate(
            _policy(_statement(Sid=None)), principal_account=SRC, action="ecr:ReplicateImage",
            resource=PROD_APP, resource_account=DST,
        )  # fmt: skip
        assert decision.statement == "Statement[0]"


class TestChecks:
    @pytest.mark.parametrize(
        ("actions", "exists", "allowed", "missing"),
        [
            (["ecr:ReplicateImage", "ecr:CreateRepository"], False, True, None),
            (["ecr:ReplicateImage"], True, True, None),
            (["ecr:ReplicateImage"], False, False, "ecr:CreateRepository"),
            (["ecr:CreateRepository"], True, False, "ecr:ReplicateImage"),
        ],
        ids=["both-new-repo", "replicate-existing", "create-missing", "replicate-missing"],
    )
    def test_check_replication(
        self, actions: list[str], exists: bool, allowed: bool, missing: str | None
    ) -> None:
        """Replication needs ReplicateImage, and CreateRepository when the repository is new."""
        decision = check_replication(
            _policy(_statement(Action=actions)), source_account=SRC, dest_account=DST,
            dest_region="eu-west-1", repository="prod/app", repository_exists=exists,
        )  # fmt: skip
        assert decision.allowed is allowed
        if missing:
            assert f"allows no {missing}" in decision.reason

    def test_check_delete(self) -> None:
        """Delete replication needs ecr:BatchDeleteImage."""
        kwargs: dict[str, Any] = {
            "source_account": SRC,
            "dest_account": DST,
            "dest_region": "eu-west-1",
            "repository": "prod/app",
        }
        assert not check_delete(_policy(_statement()), **kwargs).allowed
        assert check_delete(_policy(_statement(Action="ecr:BatchDeleteImage")), **kwargs).allowed


class TestParse:
    def test_single_statement_object(self) -> None:
        """Statement may be one object instead of a list."""
        assert parse_policy({"Version": "2012-10-17", "Statement": _statement()}) == _policy(
            _statement()
        )

    @pytest.mark.parametrize(
        ("doc", "field", "text"),
        [
            ([], None, "must be an object"),
            ({"Version": "2012-10-17"}, None, "Statement is missing"),
            ({"Version": "2020-01-01", "Statement": [_statement()]}, "Version", "not a policy"),
            ({"Statement": [_statement()], "Extra": 1}, None, "unknown key(s) Extra"),
            ({"Statement": []}, "Statement", "at least one statement"),
            ({"Statement": [_statement(Effect="Maybe")]}, "Statement[0].Effect", "not Allow"),
            ({"Statement": [_statement(Principal=None)]}, "Statement[0]", "Principal is missing"),
            ({"Statement": [_statement(Action=None)]}, "Statement[0]", "Action is missing"),
            ({"Statement": [_statement(Resource=None)]}, "Statement[0]", "Resource is missing"),
            (
                {"Statement": [_statement(Condition={"StringEquals": {}})]},
                "Statement[0].Condition",
                "Condition is not supported",
            ),
            (
                {"Statement": [_statement(NotAction="ecr:*")]},
                "Statement[0].NotAction",
                "NotAction is not supported",
            ),
            ({"Statement": [_statement(Colour="red")]}, "Statement[0]", "unknown key(s) Colour"),
            (
                {"Statement": [_statement(Principal={"AWS": "arn:aws:iam::1:root"})]},
                "Statement[0].Principal.AWS[0]",
                "is not arn:aws:iam::<12-digit account>:root",
            ),
            (
                {"Statement": [_statement(Principal={"Service": "ecr.amazonaws.com"})]},
                "Statement[0].Principal",
                "unknown key(s) Service",
            ),
            ({"Statement": [_statement(Principal="me")]}, "Statement[0].Principal", "object"),
            ({"Statement": [_statement(Action=[])]}, "Statement[0].Action", "must not be empty"),
            (
                {"Statement": [_statement(Action=["ecr:ReplicateImage", 3])]},
                "Statement[0].Action[1]",
                "not a non-empty string",
            ),
            (
                {"Statement": [_statement(Action="ReplicateImage")]},
                "Statement[0].Action[0]",
                "is not an action",
            ),
            ({"Statement": [_statement(Resource="")]}, "Statement[0].Resource[0]", "non-empty"),
            ({"Statement": [_statement(), _statement()]}, "Statement", "'Replication' is used"),
            ({"Statement": ["Allow"]}, "Statement[0]", "must be an object"),
        ],
        ids=[
            "not-object",
            "no-statement",
            "bad-version",
            "unknown-policy-key",
            "empty-statements",
            "bad-effect",
            "no-principal",
            "no-action",
            "no-resource",
            "condition",
            "not-action",
            "unknown-statement-key",
            "bad-root-arn",
            "service-principal",
            "principal-string",
            "empty-actions",
            "non-string-action",
            "action-without-service",
            "empty-resource",
            "duplicate-sid",
            "statement-not-object",
        ],
    )
    def test_rejects(self, doc: object, field: str | None, text: str) -> None:
        """A malformed policy is a config error naming the field and what is wrong."""
        with pytest.raises(ConfigError) as caught:
            parse_policy(doc)
        assert caught.value.field == field
        assert text in str(caught.value)


_POLICY = _policy(
    _statement(Resource="arn:aws:ecr:eu-west-1:444455556666:repository/prod/*"),
    _statement(Sid="NoTmp", Effect="Deny", Action="ecr:*", Resource="*tmp*"),
)


@given(
    repository=st.text(max_size=300),
    action=st.text(max_size=60),
    principal=st.text(max_size=20),
)
def test_evaluate_never_raises(repository: str, action: str, principal: str) -> None:
    """Arbitrary names, actions and principals give a Decision, never an exception."""
    decision = evaluate(
        _POLICY, principal_account=principal, action=action,
        resource=repository_arn("eu-west-1", DST, repository), resource_account=DST,
    )  # fmt: skip
    assert isinstance(decision, Decision)
    assert decision.reason
    result = check_replication(
        _POLICY, source_account=SRC, dest_account=DST, dest_region="eu-west-1",
        repository=repository, repository_exists=False,
    )  # fmt: skip
    assert result.allowed is (repository.startswith("prod/") and "tmp" not in repository)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
_STATEMENT_KEYS = st.sampled_from(["Sid", "Effect", "Principal", "Action", "Resource"])


@given(
    doc=_JSON
    | st.fixed_dictionaries(
        {
            "Version": _JSON,
            "Statement": st.lists(st.dictionaries(_STATEMENT_KEYS, _JSON), max_size=3),
        }
    )
)
def test_parse_never_raises_other_errors(doc: object) -> None:
    """Any JSON document either parses or raises ConfigError, never another exception."""
    try:
        parsed = parse_policy(doc)
    except ConfigError:
        return
    assert isinstance(parsed, RegistryPolicy)


class TestWildcardCost:
    # A backtracking regex needs O(n^6) steps for six stars against a name that almost matches;
    # a linear matcher answers in microseconds. 50 ms leaves room for a slow, shared machine.
    MAX_SECONDS = 0.05

    def test_six_wildcards_against_a_long_name_answer_at_once(self) -> None:
        """A 6-wildcard resource against a 200-character name that fails at the end is decided
        in milliseconds, not seconds on the event loop."""
        resource = f"arn:aws:ecr:eu-west-1:{DST}:repository/a*a*a*a*a*a*b"
        policy = _policy(_statement(Resource=resource))
        name = repository_arn("eu-west-1", DST, "a" * 200)
        started = time.perf_counter()
        assert not _allowed(policy, "ecr:ReplicateImage", name)
        assert time.perf_counter() - started < self.MAX_SECONDS

    @pytest.mark.parametrize(
        ("pattern", "text", "matches"),
        [
            ("*", "", True),
            ("*", "anything/at/all", True),
            ("a*", "a", True),
            ("*a", "ba", True),
            ("*a", "ab", False),
            ("a?c", "abc", True),
            ("a?c", "ac", False),
            ("a*b*c", "aXbYc", True),
            ("a*b*c", "aXcYb", False),
            ("a*b?d*", "abbce", False),
            ("a*b?d*", "abbd-x", True),
            ("*.*", "a.b", True),
            ("x*", "X", False),
            ("ab", "abc", False),
            ("?*?", "a", False),
            ("?*?", "ab", True),
        ],
        ids=repr,
    )
    def test_matching(self, pattern: str, text: str, matches: bool) -> None:
        """`*` is any run, `?` one character, everything else literal, the whole text matched."""
        policy = _policy(_statement(Resource=f"arn:aws:ecr:eu-west-1:{DST}:repository/{pattern}"))
        assert _allowed(policy, "ecr:ReplicateImage", repository_arn("eu-west-1", DST, text)) is (
            matches
        )


@given(
    pattern=st.text(alphabet="ab*?", max_size=8),
    text=st.text(alphabet="abc", max_size=10),
)
def test_wildcard_match_agrees_with_a_regex(pattern: str, text: str) -> None:
    """The linear matcher answers as the (backtracking) regex it replaced, on short inputs."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    assert wildcard_match(pattern, text) is (re.fullmatch(regex, text, re.DOTALL) is not None)
