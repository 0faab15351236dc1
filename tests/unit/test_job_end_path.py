"""The path a job's end takes (the runner, its queue protocol, a backfill's ledger, the job-end
values) is typed end to end: no `Any` and no untyped `**kwargs` in those modules.

mypy --strict accepts `Any` and `**counters: Any`; the ledger forwarded `**Any` to the journal
before the job-end value existed, so a wrong field reached the database unchecked. This reads the
modules' syntax, as tests/unit/test_layers.py does: cheap, and it fails on the first `Any`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "replicator"
# Every module a job's end passes through before the journal's transaction.
PATH_MODULES = (
    "engine/runner.py",
    "engine/job_queue.py",
    "scan/ledger.py",
    "domain/jobs/ends.py",
)


def untyped_spots(source: str) -> list[str]:
    """Where `source` names `Any` or takes `**kwargs` without a type (line: what)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id == "Any":
            found.append(f"{node.lineno}: Any")
        elif isinstance(node, ast.Attribute) and node.attr == "Any":
            found.append(f"{node.lineno}: .Any")
        elif isinstance(node, ast.alias) and node.name == "Any":
            found.append(f"{node.lineno}: import Any")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
            node.args.kwarg is not None and node.args.kwarg.annotation is None
        ):
            found.append(f"{node.lineno}: **{node.args.kwarg.arg} in {node.name}")
    return found


class TestJobEndPath:
    @pytest.mark.parametrize("module", PATH_MODULES)
    def test_no_any_on_the_path(self, module: str) -> None:
        """The module neither names `Any` nor takes `**kwargs` without a type."""
        assert untyped_spots((PACKAGE / module).read_text()) == []

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            pytest.param("from typing import Any\n", ["1: import Any"], id="import"),
            pytest.param("def f(x: Any) -> None: ...\n", ["1: Any"], id="annotation"),
            pytest.param("import typing\nx: typing.Any\n", ["2: .Any"], id="attribute"),
            pytest.param(
                "async def end(job: int, **details) -> None: ...\n",
                ["1: **details in end"],
                id="kwargs-untyped",
            ),
            pytest.param(
                "async def end(job: int, **details: Any) -> None: ...\n",
                ["1: Any"],
                id="kwargs-any",
            ),
            pytest.param("def log(**fields: str) -> None: ...\n", [], id="kwargs-typed"),
            pytest.param("def f(*, code: str) -> None: ...\n", [], id="typed"),
        ],
    )
    def test_the_check_finds_each_kind(self, source: str, expected: list[str]) -> None:
        """Each way of leaving the path untyped is found (the check can fail)."""
        assert untyped_spots(source) == expected
