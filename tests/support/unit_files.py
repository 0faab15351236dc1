"""Reading the systemd unit files of systemd/ the way the packaging tests need them."""

from __future__ import annotations

import sys
from pathlib import Path

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
# Where systemd/README.md installs replicator; the units' ExecStart and the Dockerfile use it.
INSTALLED_BIN = "/opt/replicator/venv/bin"
# This checkout's console scripts, standing in for INSTALLED_BIN where a file must exist.
LOCAL_BIN = Path(sys.executable).parent


def unit_settings(path: Path, section: str = "Service") -> dict[str, list[str]]:
    """The `key=value` lines of one section, every value of a repeated key in order."""
    found: dict[str, list[str]] = {}
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        assert not line.endswith("\\"), f"{path.name}: continuation lines are not parsed here"
        key, _, value = line.partition("=")
        if current == section:
            found.setdefault(key, []).append(value)
    return found
