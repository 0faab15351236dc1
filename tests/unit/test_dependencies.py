"""pyproject.toml declares what the code imports, no more, and constraints.txt pins it."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
RUNTIME = {canonicalize_name(Requirement(t).name): Requirement(t) for t in PROJECT["dependencies"]}
DEV = {
    canonicalize_name(Requirement(t).name): Requirement(t)
    for t in PROJECT["optional-dependencies"]["dev"]
}

# Imported only when the feature is used, from an optional extra (`ecr`: botocore).
FEATURE_EXTRAS = {
    canonicalize_name(Requirement(t).name) for t in PROJECT["optional-dependencies"]["ecr"]
}


def imported_top_levels() -> set[str]:
    """Top-level modules imported anywhere in replicator/ (absolute imports only)."""
    names: set[str] = set()
    for path in (ROOT / "replicator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def third_party_distributions() -> set[str]:
    """The distributions that provide replicator's non-stdlib imports."""
    providers = metadata.packages_distributions()
    found: set[str] = set()
    for module in imported_top_levels() - set(sys.stdlib_module_names) - {"replicator"}:
        assert module in providers, f"{module} is imported but no installed package provides it"
        found.update(canonicalize_name(name) for name in providers[module])
    return found


class TestDeclared:
    def test_every_imported_package_is_declared(self) -> None:
        """Each package replicator/ imports is a runtime dependency (or, imported only where
        its feature is used, an optional extra's), not a transitive accident."""
        missing = third_party_distributions() - set(RUNTIME) - FEATURE_EXTRAS
        assert not missing, f"imported but not in [project] dependencies: {sorted(missing)}"

    def test_every_declared_package_is_imported(self) -> None:
        """No runtime dependency is declared that replicator/ never imports."""
        unused = set(RUNTIME) - third_party_distributions()
        assert not unused, f"declared but never imported: {sorted(unused)}"

    @pytest.mark.parametrize(
        ("package", "bound"),
        [
            pytest.param("httpx", "<1", id="httpx-private-content"),
            pytest.param("aiomqtt", "<3", id="aiomqtt-private-client"),
            pytest.param("paho-mqtt", "<3", id="paho-2-api"),
        ],
    )
    def test_internals_used_are_bounded(self, package: str, bound: str) -> None:
        """A package used through private attributes has an upper bound below its next major."""
        assert bound in str(RUNTIME[package].specifier)

    def test_h11_floor_excludes_the_chunked_cve(self) -> None:
        """h11 0.15 and older (CVE-2025-43859, lenient chunked bodies) are not allowed."""
        specifier = RUNTIME["h11"].specifier
        assert not specifier.contains("0.15.0")
        assert specifier.contains("0.16.0")

    def test_pytest_asyncio_floor_has_the_settings_used(self) -> None:
        """pytest-asyncio's floor is a version that knows every asyncio_* setting we use."""
        # The release that introduced each setting (pytest-asyncio's changelog).
        introduced = {
            "asyncio_mode": "0.17",
            "asyncio_default_fixture_loop_scope": "0.24",
            "asyncio_default_test_loop_scope": "0.26",
        }
        settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
            "pytest"
        ]["ini_options"]
        used = [introduced[key] for key in settings if key.startswith("asyncio_")]
        floor = min(Version(s.version) for s in DEV["pytest-asyncio"].specifier)
        assert used
        assert floor >= max(Version(v) for v in used)


class TestConstraints:
    def test_constraints_file_is_current(self) -> None:
        """constraints.txt is what scripts/constraints.py writes from this venv."""
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts/constraints.py"), "--check"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    def test_pins_satisfy_the_declared_ranges(self) -> None:
        """Every pinned runtime package is within pyproject.toml's range for it."""
        pins = {}
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                name, _, version = line.partition("==")
                pins[canonicalize_name(name)] = version
        for name, requirement in RUNTIME.items():
            assert name in pins, f"{name} is not pinned"
            assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]}"
