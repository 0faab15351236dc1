"""How pytest-xdist shares the suite among its workers (scripts/test.sh runs `-n WORKERS --dist
loadfile --no-loadscope-reorder`).

Each module is one unit of work, so its module-scoped fixtures (stacks, registries, the image
build, Pulp) are set up once, on one worker. The modules of a group in SHARED_GROUPS are one unit
too: one worker runs them one after another, because their timing-bound tests would break beside
each other. (xdist's own `xdist_group` mark does not work with this pytest: xdist 3.8 renames
the test ids through an attribute pytest 9.2 no longer reads.)

On a worker the modules holding the most `slow` tests are collected first, and so handed out
first: the longest units first keep one worker from ending the run alone on a long module. A
serial run keeps the collection order.
"""

from __future__ import annotations

from collections import Counter

import pytest
from xdist.scheduler import LoadFileScheduling

# Modules one worker runs back to back (their name: the group's reason).
SHARED_GROUPS: dict[str, tuple[str, ...]] = {
    # Both change the host's mount table: buildah's chroot runs set up and tear down mounts of the
    # image's root, the disk scenarios mount and lazily unmount tmpfs file systems. A `buildah
    # run` once printed nothing beside a tmpfs scenario in a parallel run, and passed alone.
    "host-mounts": (
        "tests/integration/test_image.py",
        "tests/integration/test_reliability_disk.py",
    ),
}
GROUP_OF = {module: name for name, modules in SHARED_GROUPS.items() for module in modules}


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def unit_of(nodeid: str) -> str:
    """The unit of work of the test `nodeid`: its module, or its module's shared group."""
    module = _module(nodeid)
    return GROUP_OF.get(module, module)


class ModuleScheduling(LoadFileScheduling):
    """loadfile, with the modules of each shared group as one unit."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadFileScheduling | None:
    """ModuleScheduling for `--dist loadfile`; xdist's own scheduler for any other mode."""
    if config.getvalue("dist") != "loadfile":
        return None
    return ModuleScheduling(config, log)  # type: ignore[arg-type]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the modules with the most slow tests first."""
    if not hasattr(config, "workerinput"):
        return
    slow = Counter(_module(item.nodeid) for item in items if item.get_closest_marker("slow"))
    # sorted() is stable: modules with as many slow tests keep their collection order.
    items.sort(key=lambda item: -slow[_module(item.nodeid)])
