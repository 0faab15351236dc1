"""Where the suite's servers keep files they delete again: in memory when the machine allows.

The PostgreSQL cluster (tests/support/journal_fixtures.py) and every registry's storage
(tests/support/registry_server.py) make thousands of small files a session and delete them;
on a disk mounted with `discard` each unlink is a TRIM, and deleting them took minutes of a
suite run (the cluster alone 40-290 s at the session's end, a registry of ten small images
0.22 s against 0.01 s in memory).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# A tmpfs on Linux (half the memory by default).
MEMORY_FOLDER = Path("/dev/shm")
# Free space MEMORY_FOLDER must have: the suite's live registries and databases take well under
# a GiB (databases are dropped and most registries deleted after their test).
MEMORY_NEEDED_BYTES = 2 * 1024**3


def scratch_parent() -> Path | None:
    """MEMORY_FOLDER when it is writable and has room; None (the temp dir) otherwise."""
    try:
        if not os.access(MEMORY_FOLDER, os.W_OK | os.X_OK):
            return None
        room = shutil.disk_usage(MEMORY_FOLDER).free
    except OSError:
        return None
    return MEMORY_FOLDER if room > MEMORY_NEEDED_BYTES else None
