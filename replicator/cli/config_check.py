"""`replicator config check [FILE]`: validate a config and show where each rule sends images.

Cross-account destinations are checked against the destination's registry policy for the
source account. The policy speaks about repository ARNs, so each rule is checked with a
representative repository name per repository filter (an EXACT filter's name, a prefix followed
by `/example`, a glob with `*` read as `example`); a filter that gives no sure example (a regular
expression, a glob with a character class) is reported as "depends on repository".
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from replicator import logs
from replicator.cli.documents import document, print_json
from replicator.config.loading import Config, RegistryConfig, load_config
from replicator.config.reload import DAEMON_RESTART_KEYS
from replicator.config.sites import describe_credentials, sites_of
from replicator.domain.routing import cycles
from replicator.domain.routing.policy import (
    BATCH_DELETE_IMAGE,
    CREATE_REPOSITORY,
    REPLICATE_IMAGE,
    evaluate,
    repository_arn,
)
from replicator.domain.routing.rules import Filter, FilterType, Rule
from replicator.registry.http.proxy import DIRECT, parse_proxy_url

EXIT_OK = 0
# The name put after a prefix, or in place of `*`, to make a representative repository name.
EXAMPLE_NAME = "example"
# What the daemon does with a loop of replication between registries (README, "Active-active").
CYCLE_HANDLING = (
    "each push goes around once: the daemon knows the event of its own replica (or delete) "
    "at the next registry as an echo and makes no job back; reconcile never moves a tag off "
    "a newer write; two pushes of one tag crossing on their way settle on the later push"
)
# Filters checked per rule; beyond this the summary would no longer fit on a screen.
MAX_SAMPLES_PER_RULE = 4


@dataclass(frozen=True, slots=True)
class Check:
    """One policy question for one representative repository; `allowed` None = cannot tell."""

    repository: str | None
    action: str
    allowed: bool | None
    reason: str


@dataclass(frozen=True, slots=True)
class Reach:
    """One destination a rule reaches, and what its policy says."""

    registry: str
    account: str
    region: str
    cross_account: bool
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleSummary:
    """One rule of one source registry."""

    source: str
    index: int
    repositories: str
    tags: str
    deletes: bool
    destinations: tuple[Reach, ...] = field(default=())


def register(subparsers: Any) -> None:
    """Add `config check [FILE] [--config FILE] [--json]`."""
    config = subparsers.add_parser("config", help="check the daemon configuration")
    commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    check = commands.add_parser(
        "check", help="validate a config file and summarise registries, rules and permissions"
    )
    check.add_argument("file", nargs="?", metavar="FILE", help="config file (wins over --config)")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.add_argument(
        "--quiet",
        action="store_true",
        help="print no summary, only problems (the units' ExecReload checks the file so)",
    )
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config (a ConfigError goes to the caller: stderr, exit 2) and print the summary."""
    config = load_config(args.file or args.config)
    rules = summarise(config)
    if args.json:
        print_json(document("config check", as_json(config, rules)))
    elif not args.quiet:
        print("\n".join(as_text(config, rules)))
    for name, registry in config.registries.items():
        _, warning = describe_credentials(registry)
        if warning:
            _warn(f"registries.{name}.docker_config", warning)
    return EXIT_OK


def _warn(field: str, warning: str) -> None:
    """A warning about the file: a log line on the journal's stream (ExecReload), else text."""
    if logs.stderr_is_journal():
        logs.get_logger(__name__).warning("config_warning", field=field, warning=warning)
    else:
        print(f"warning: {field}: {warning}", file=sys.stderr)


def webhook_sources(config: Config) -> dict[str, dict[str, str]]:
    """How the bridge takes each registry's webhooks: authentication and body format."""
    bridge = config.bridge
    described: dict[str, dict[str, str]] = {}
    for name in config.registries:
        source = bridge.sources.get(name)
        if source is not None:
            described[name] = {"auth": source.auth.value, "format": source.format}
        else:
            # Only on loopback: the config is refused otherwise; the bridge warns at start.
            auth = "bearer (bridge.token_file)" if bridge.token_file else "none (loopback only)"
            described[name] = {"auth": auth, "format": "auto"}
    return described


def _bridge_transport(config: Config) -> str:
    bridge = config.bridge
    if bridge.client_ca is not None:
        return "HTTPS, client certificates required"
    return "HTTPS" if bridge.tls_cert is not None else "HTTP"


def summarise(config: Config) -> list[RuleSummary]:
    """Every rule of every registry with the destinations it reaches and their policy answers."""
    summaries = []
    for source in config.registries.values():
        for index, rule in enumerate(source.replication.rules):
            reaches = []
            for destination in rule.destinations:
                target = config.registry_by_destination(destination)
                if target is not None and target is not source:
                    reaches.append(_reach(source, target, rule))
            summaries.append(
                RuleSummary(
                    source=source.name,
                    index=index,
                    repositories=_describe(rule.repository_filters, "all") + _excluding(rule),
                    tags=_describe(rule.tag_filters, "all, and untagged"),
                    deletes=rule.delete_replication,
                    destinations=tuple(reaches),
                )
            )
    return summaries


def _describe(filters: tuple[Filter, ...], default: str) -> str:
    return " or ".join(f.describe() for f in filters) if filters else default


def _excluding(rule: Rule) -> str:
    if not rule.exclude_repository_filters:
        return ""
    return " except " + " or ".join(f.describe() for f in rule.exclude_repository_filters)


def _reach(source: RegistryConfig, target: RegistryConfig, rule: Rule) -> Reach:
    cross = source.account != target.account
    checks: list[Check] = []
    if cross:
        actions = [REPLICATE_IMAGE, CREATE_REPOSITORY]
        if rule.delete_replication:
            actions.append(BATCH_DELETE_IMAGE)
        filters = rule.repository_filters or (None,)
        for repo_filter in filters[:MAX_SAMPLES_PER_RULE]:
            sample = sample_repository(repo_filter, rule)
            for action in actions:
                checks.append(_check(source, target, sample, action, repo_filter))
    return Reach(target.name, target.account, target.region, cross, tuple(checks))


def _check(
    source: RegistryConfig,
    target: RegistryConfig,
    sample: str | None,
    action: str,
    repo_filter: Filter | None,
) -> Check:
    if sample is None:
        what = repo_filter.describe() if repo_filter else "this rule"
        return Check(None, action, None, f"depends on repository ({what})")
    decision = evaluate(
        target.policy,
        principal_account=source.account,
        action=action,
        resource=repository_arn(target.region, target.account, sample),
        resource_account=target.account,
    )
    return Check(sample, action, decision.allowed, decision.reason)


def sample_repository(repo_filter: Filter | None, rule: Rule) -> str | None:
    """A repository name the filter selects and the rule does not exclude, or None if unsure."""
    if repo_filter is None:
        sample: str | None = EXAMPLE_NAME
    elif repo_filter.filter_type is FilterType.EXACT:
        sample = repo_filter.filter
    elif repo_filter.filter_type is FilterType.PREFIX_MATCH:
        prefix = repo_filter.filter
        sample = prefix + EXAMPLE_NAME if prefix.endswith("/") else f"{prefix}/{EXAMPLE_NAME}"
    elif repo_filter.filter_type is FilterType.GLOB and "[" not in repo_filter.filter:
        sample = re.sub(r"\*+", EXAMPLE_NAME, repo_filter.filter).replace("?", "x")
    else:
        sample = None
    if sample is None or not rule.selects_repository(sample):
        return None
    return sample


def as_text(config: Config, rules: list[RuleSummary]) -> list[str]:
    """The one-screen summary for people."""
    lines = ["ok", f"config {config.path} (version {config.version})", "", "registries"]
    name_width = max(len(name) for name in config.registries)
    url_width = max(len(r.url) for r in config.registries.values())
    for registry in config.registries.values():
        extra = []
        if registry.replication.rules:
            extra.append(f"{len(registry.replication.rules)} rule(s)")
        if registry.policy is not None:
            extra.append("policy")
        extra.append(f"credentials: {describe_credentials(registry)[0]}")
        if registry.repositories is not None:
            extra.append(f"repositories: {len(registry.repositories)} named, catalog not read")
        if registry.proxy is not None:
            # host:port only: a proxy URL may carry credentials.
            shown = "none" if registry.proxy == DIRECT else str(parse_proxy_url(registry.proxy))
            extra.append(f"proxy: {shown}")
        lines.append(
            f"  {registry.name:<{name_width}}  {registry.account}  {registry.region:<14}  "
            f"{registry.url:<{url_width}}  {', '.join(extra)}".rstrip()
        )
    lines += ["", "replication"]
    if not rules:
        lines.append("  no rules: nothing is replicated")
    for rule in rules:
        deletes = "replicated" if rule.deletes else "not replicated"
        lines.append(
            f"  {rule.source} rule {rule.index + 1}: repositories: {rule.repositories}; "
            f"tags: {rule.tags}; deletes: {deletes}"
        )
        for reach in rule.destinations:
            lines.extend(_reach_lines(reach))
    found = cycles(sites_of(config))
    if found:
        lines += ["", "cycles"]
        for loop in found:
            lines.append(f"  {' -> '.join((*loop, loop[0]))}: {CYCLE_HANDLING}")
    lines += ["", f"webhooks (bridge on {config.bridge.listen}, {_bridge_transport(config)})"]
    for name, how in webhook_sources(config).items():
        lines.append(f"  {name:<{name_width}}  auth: {how['auth']}; format: {how['format']}")
    lines += [
        "",
        "reload (SIGHUP, systemctl reload) applies the rest; "
        f"restart to change: {', '.join(DAEMON_RESTART_KEYS)}",
    ]
    return lines


def _reach_lines(reach: Reach) -> list[str]:
    head = f"    -> {reach.registry} ({reach.account} {reach.region})"
    if not reach.cross_account:
        return [f"{head}: same account, no policy needed"]
    lines = [f"{head}: cross-account"]
    by_sample: dict[str | None, list[Check]] = {}
    for check in reach.checks:
        by_sample.setdefault(check.repository, []).append(check)
    for sample, checks in by_sample.items():
        denied = [c for c in checks if c.allowed is False]
        if sample is None:
            verdict = checks[0].reason
        elif denied:
            others = ", ".join(c.action for c in denied[1:])
            verdict = f"DENIED: {denied[0].reason}" + (f" (nor {others})" if others else "")
        else:
            verdict = "allowed: " + ", ".join(c.action for c in checks)
        lines.append(f"         {sample or 'repository'}: {verdict}")
    return lines


def as_json(config: Config, rules: list[RuleSummary]) -> dict[str, Any]:
    """The summary for machines."""
    return {
        "ok": True,
        "file": str(config.path),
        "version": config.version,
        "registries": [
            {
                "name": r.name,
                "account": r.account,
                "region": r.region,
                "url": r.url,
                "rules": len(r.replication.rules),
                "policy": r.policy is not None,
                "credentials": describe_credentials(r)[0],
                "credentials_warning": describe_credentials(r)[1],
            }
            for r in config.registries.values()
        ],
        "rules": [asdict(rule) for rule in rules],
        "cycles": [
            {"registries": list(loop), "handling": CYCLE_HANDLING}
            for loop in cycles(sites_of(config))
        ],
        "webhooks": {
            "listen": config.bridge.listen,
            "transport": _bridge_transport(config),
            "sources": webhook_sources(config),
        },
        "restart_required_for": list(DAEMON_RESTART_KEYS),
    }
