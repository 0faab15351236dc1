"""The domain package is pure: it imports no I/O library and reads no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "replicator" / "domain"
FORBIDDEN = {
    "asyncio",
    "httpx",
    "aiomqtt",
    "paho",
    "sqlmodel",
    "sqlalchemy",
    "socket",
    "time",
    "subprocess",
    "os",
    "threading",
    "tenacity",
    "structlog",
    "prometheus_client",
    "zoneinfo",
}
ALLOWED_PROJECT = ("replicator.domain", "replicator.errors")
# `datetime` is allowed for its calendar (parsing, arithmetic, formatting); these calls read the
# clock, or the machine's time zone on a naive datetime, whatever they are called on.
CLOCK_CALLS = {"now", "utcnow", "today", "fromtimestamp", "utcfromtimestamp", "timestamp"}
# Converting to the machine's time zone: `astimezone()` without one.
LOCAL_ZONE_CALLS = {"astimezone"}


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def impurities(source: str) -> list[str]:
    """What in `source` is not pure: I/O or clock imports, the I/O half of the project, and
    calls that read the clock or the local time zone."""
    tree = ast.parse(source)
    found: list[str] = []
    for name in _imports(tree):
        root = name.split(".")[0]
        upward = root == "replicator" and not name.startswith(ALLOWED_PROJECT)
        if root in FORBIDDEN or upward:
            found.append(f"imports {name}")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        called = node.func.attr
        zoneless = called in LOCAL_ZONE_CALLS and not node.args and not node.keywords
        if called in CLOCK_CALLS or zoneless:
            found.append(f"calls .{called}() (line {node.lineno})")
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("import asyncio", ["imports asyncio"], id="io-library"),
        pytest.param("from time import monotonic", ["imports time"], id="clock-module"),
        pytest.param("from replicator.engine import job", ["imports replicator.engine"], id="up"),
        pytest.param(
            "from datetime import datetime\nnow = datetime.now()", ["calls .now() (line 2)"]
        ),
        pytest.param("import datetime\ndatetime.date.today()", ["calls .today() (line 2)"]),
        pytest.param("d.fromtimestamp(0, tz)", ["calls .fromtimestamp() (line 1)"], id="epoch"),
        pytest.param("moment.timestamp()", ["calls .timestamp() (line 1)"], id="naive-local"),
        pytest.param("moment.astimezone()", ["calls .astimezone() (line 1)"], id="local-zone"),
        pytest.param("moment.astimezone(UTC)", [], id="to-a-named-zone"),
        pytest.param(
            "from datetime import UTC, datetime, timedelta\n"
            "datetime.fromisoformat(text).astimezone(UTC) + timedelta(seconds=1)",
            [],
            id="calendar",
        ),
        pytest.param("facts.now - facts.started", [], id="a-field-named-now"),
        pytest.param("from replicator.domain.jobs import JobState", [], id="domain"),
    ],
)
def test_impurities_are_found(source: str, expected: list[str]) -> None:
    """The rule finds I/O imports, upward imports and clock reads, and lets the standard
    library's calendar and values named `now` through."""
    assert impurities(source) == expected


@pytest.mark.parametrize(
    "path", sorted(DOMAIN.rglob("*.py")), ids=lambda p: str(p.relative_to(DOMAIN))
)
def test_domain_module_is_pure(path: Path) -> None:
    """Each domain module, in every sub-package, imports neither I/O libraries, clocks, nor the
    I/O half of the project, and reads no clock."""
    assert impurities(path.read_text()) == [], path.relative_to(DOMAIN)
