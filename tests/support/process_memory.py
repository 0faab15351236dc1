"""The peak memory of a running process, as the scale tests and benches read it."""

from __future__ import annotations

from pathlib import Path


def peak_rss_kib(pid: int) -> int:
    """VmHWM (the peak resident set) of a running process, in KiB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
