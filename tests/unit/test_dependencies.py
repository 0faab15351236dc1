"""pyproject.toml declares what the code imports, no more, and requirements.lock pins it."""

from __future__ import annotations

import ast
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


def _lock(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of one hashed requirements file that scripts/lock.sh writes."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    current = ""
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes | {text.removeprefix("--hash=").rstrip(" \\")})
            continue
        requirement = text.rstrip(" \\").split(";")[0].strip()
        package, _, version = requirement.partition("==")
        assert version, f"{name}: {text!r} is not an exact pin"
        current = canonicalize_name(package)
        assert current not in pins, f"{name}: {package} pinned twice"
        pins[current] = (version, frozenset())
    return pins


LOCK = _lock("requirements.lock")
IMAGE_LOCK = _lock("requirements-image.lock")
# Pulp's own venv for the tests (scripts/pulp.sh), apart from replicator's lock.
PULP_LOCK = _lock("requirements-pulp.lock")
BUILD = [Requirement(t) for t in tomllib.loads(
    (ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]]  # fmt: skip
EVERY_DECLARED = [
    Requirement(t)
    for texts in [PROJECT["dependencies"], *PROJECT["optional-dependencies"].values()]
    for t in texts
] + [*BUILD, Requirement("pip")]


def _closure(roots: list[Requirement], extras: set[str]) -> set[str]:
    """Every distribution the roots need, followed through the installed packages' own
    requirements with markers evaluated for this interpreter and platform."""
    seen: set[str] = set()
    pending = [(r, frozenset(extras)) for r in roots]
    while pending:
        requirement, wanted = pending.pop()
        environments = [{"extra": e} for e in wanted] or [{"extra": ""}]
        if requirement.marker and not any(requirement.marker.evaluate(e) for e in environments):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        distribution = metadata.distribution(name)
        for text in distribution.requires or []:
            pending.append((Requirement(text), frozenset(requirement.extras)))
    return seen


class TestLock:
    def test_every_declared_requirement_is_locked_within_its_range(self) -> None:
        """Each requirement of pyproject.toml (runtime, every extra, the build backend, pip)
        is in requirements.lock at a version its range allows."""
        for requirement in EVERY_DECLARED:
            name = canonicalize_name(requirement.name)
            assert name in LOCK, f"{name} is declared but not locked: run scripts/lock.sh"
            version, _ = LOCK[name]
            assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version}"

    def test_every_pin_has_hashes(self) -> None:
        """Every locked version carries at least one sha256, so pip can --require-hashes."""
        for lock in (LOCK, IMAGE_LOCK, PULP_LOCK):
            assert all(hashes for _, hashes in lock.values())
        assert PULP_LOCK["pulp-container"][0] == "2.30.0"

    def test_no_stray_packages(self) -> None:
        """The lock holds exactly the closure of what pyproject.toml declares, nothing more."""
        extras = set(PROJECT["optional-dependencies"])
        needed = _closure([*EVERY_DECLARED, Requirement("replicator")], extras) - {"replicator"}
        assert set(LOCK) == needed

    def test_the_image_lock_is_the_locks_subset(self) -> None:
        """requirements-image.lock pins each of its packages at the lock's version and hashes."""
        for name, (version, hashes) in IMAGE_LOCK.items():
            assert name in LOCK, name
            assert LOCK[name][0] == version, f"{name}: {version} vs {LOCK[name][0]}"
            assert hashes <= LOCK[name][1], name

    def test_the_image_lock_covers_runtime_ecr_and_postgres(self) -> None:
        """Every runtime requirement and those of the ecr and postgres extras (a config can need
        either) are in the image's lock."""
        optional = PROJECT["optional-dependencies"]
        for text in [*PROJECT["dependencies"], *optional["ecr"], *optional["postgres"]]:
            assert canonicalize_name(Requirement(text).name) in IMAGE_LOCK, text

    def test_this_venv_is_at_the_locked_versions(self) -> None:
        """scripts/setup.sh installed every locked package at exactly its locked version."""
        for name, (version, _) in LOCK.items():
            assert metadata.version(name) == version, name
