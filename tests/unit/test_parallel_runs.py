"""How the suite's modules are shared among xdist workers (tests/support/parallel_runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.parallel_runs import GROUP_OF, SHARED_GROUPS, unit_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("nodeid", "scope"),
    [
        ("tests/unit/test_refs.py::test_parse[a]", "tests/unit/test_refs.py"),
        ("tests/unit/test_refs.py::TestRefs::test_one", "tests/unit/test_refs.py"),
        (
            "tests/integration/test_image.py::TestImage::test_version_is_this_checkouts",
            "host-mounts",
        ),
        ("tests/integration/test_reliability_disk.py::test_full_disk[x::y]", "host-mounts"),
        (
            "tests/integration/test_long_links.py::TestBandwidthLimit::test_a",
            "tests/integration/test_long_links.py",
        ),
    ],
)
def test_a_module_or_its_shared_group_is_one_unit(nodeid: str, scope: str) -> None:
    """A test's unit of work is its module, or the shared group its module belongs to."""
    assert unit_of(nodeid) == scope


def test_every_shared_module_is_in_one_group_and_exists() -> None:
    """No module is named by two groups, and each named module is in the tree."""
    named = [module for modules in SHARED_GROUPS.values() for module in modules]
    assert len(named) == len(set(named)) == len(GROUP_OF)
    assert all((ROOT / module).is_file() for module in named), named
