"""The domain package is pure: it imports no I/O library."""

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
    "datetime",
}
ALLOWED_PROJECT = ("replicator.domain", "replicator.errors")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted(DOMAIN.rglob("*.py")), ids=lambda p: str(p.relative_to(DOMAIN))
)
def test_domain_module_imports_no_io(path: Path) -> None:
    """Each domain module imports neither I/O libraries, clocks, nor the I/O half of the project."""
    for name in _imports(path):
        root = name.split(".")[0]
        assert root not in FORBIDDEN, f"{path.name} imports {name}"
        if root == "replicator":
            assert name.startswith(ALLOWED_PROJECT), f"{path.name} imports {name}"
