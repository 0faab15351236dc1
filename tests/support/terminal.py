"""Run a command with its stderr on a pseudo-terminal, as on an operator's screen."""

from __future__ import annotations

import os
import pty
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 120


def on_terminal(argv: Sequence[str]) -> tuple[int, str]:
    """Exit code and everything `argv` wrote to its terminal stderr (stdout discarded)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
        cwd=ROOT,
    )  # fmt: skip
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    return process.wait(timeout=TIMEOUT_SECONDS), drawn.decode(errors="replace")


def last_line(drawn: str) -> str:
    """The last state of a line redrawn after each carriage return (the terminal turns
    "\\n" into "\\r\\n")."""
    lines = drawn.replace("\x1b[K", "").replace("\r\n", "\n").split("\r")
    return [line for line in lines if line.strip()][-1]
