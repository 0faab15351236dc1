"""The packages form layers: no import cycle, no import running up, no loose top-level module.

Every import counts: at module level, inside functions, and under `TYPE_CHECKING`, because each is
a dependency a reader has to hold in mind even where Python resolves it late.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "replicator"

# Higher may import lower, never the reverse; packages of equal rank do not import each other.
# `registry.http` is the registry's own HTTP/1.1 client: the registry sits on it, it knows nothing
# of the registry above it.
RANKS = {
    "domain": 0,
    "registry.http": 1,
    "registry": 2,
    "journal": 3,
    "config": 3,
    "engine": 4,
    "scan": 5,
    "daemon": 6,
    "cli": 7,
}
# Usable from every layer: the exception tree, the logging setup and the package itself (its
# version).
SHARED = {"errors", "logs", "__init__"}
# The program's entry point sits above everything.
TOP = {"__main__"}
ALLOWED_TOP_LEVEL = SHARED | TOP


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module `replicator.<name>` names, or None for anything outside the project."""
    if name == "replicator":
        return "__init__"
    if not name.startswith("replicator."):
        return None
    dotted = name.removeprefix("replicator.")
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    # `from replicator import __version__` imports the package itself.
    return dotted or "__init__"


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = ["replicator", *module.split(".")]
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every project module `module` imports, wherever in its source the import stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = _absolute(node, module, is_package)
            # `from replicator.pkg import submodule` imports the submodule itself.
            targets = [f"{origin}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in map(_resolve, targets) if t is not None and t != module)
    return found


GRAPH = {
    module: _imports(path.read_text(), module, is_package=path.name == "__init__.py")
    for module, path in MODULES.items()
}


def _layer(module: str) -> str:
    for layer in sorted(RANKS, key=len, reverse=True):
        if module == layer or module.startswith(f"{layer}."):
            return layer
    return module


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        mine = _layer(module)
        if mine in TOP:
            continue
        for target in sorted(targets):
            theirs = _layer(target)
            if theirs in SHARED or theirs == mine:
                continue
            if mine in SHARED or theirs in TOP or RANKS[theirs] >= RANKS[mine]:
                found.append(f"{module} ({mine}) imports {target} ({theirs})")
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_imports_inside_functions_and_under_type_checking_count() -> None:
    """The parser finds an import in a function and one under `TYPE_CHECKING`, relative or not."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from replicator.daemon.bus import Bus\n"
        "def f():\n    from ..journal import store\n"
    )
    assert _imports(source, "engine.runner") == {"daemon.bus", "journal.store"}
    assert _imports("from replicator import __version__", "journal.schema") == {"__init__"}


def test_an_added_violation_is_caught() -> None:
    """An engine module importing the daemon is an upward import and, with the daemon
    importing the engine, a cycle: the checks below would fail on it."""
    graph = {module: set(targets) for module, targets in GRAPH.items()}
    graph["engine.runner"].add("daemon.service")
    assert "engine.runner (engine) imports daemon.service (daemon)" in _upward_imports(graph)
    assert any({"engine.runner", "daemon.service"} <= set(c) for c in _cycles(graph))


def test_no_import_cycle() -> None:
    """No set of modules imports itself round, however late the imports run."""
    assert _cycles(GRAPH) == []


def test_no_import_runs_up_the_layers() -> None:
    """cli > daemon > scan > engine > journal/config > registry > registry.http > domain."""
    assert _upward_imports(GRAPH) == []


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_top_level_holds_only_entry_points_errors_and_logs(path: Path) -> None:
    """The package's top level holds folders plus __init__, __main__, errors and logs."""
    assert path.stem in ALLOWED_TOP_LEVEL, f"{path.name} belongs in a role folder"


def test_every_folder_has_a_rank() -> None:
    """A new folder gets a place in the layers before it gets code."""
    unranked = {
        _layer(module)
        for module in MODULES
        if _layer(module) not in RANKS and _layer(module) not in ALLOWED_TOP_LEVEL
    }
    assert unranked == set()


def test_a_backfill_scan_loads_no_database_library() -> None:
    """The engine and a backfill's run import the journal only to type it or once they open it:
    a no-op pass never loads SQLAlchemy (a third of its time)."""
    probe = (
        "import sys, replicator.cli.backfill, replicator.scan.backfill_run, "
        "replicator.engine.runner; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('sqlalchemy', 'sqlmodel')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    assert done.stdout.strip() == "[]"
