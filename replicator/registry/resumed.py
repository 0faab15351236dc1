"""Told of every blob transfer resumed after the link broke (the daemon's metrics count them).

set_resume_hook(metrics.on_resume)   # once, at start-up
resumed("registry.example:443", "upload")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Direction = Literal["download", "upload"]
# (the registry's host, which way the blob was going)
ResumeHook = Callable[[str, Direction], None]
_on_resume: ResumeHook | None = None


def set_resume_hook(hook: ResumeHook | None) -> None:
    """Install the process-wide resume observer (the daemon's metrics)."""
    global _on_resume  # noqa: PLW0603 - one observer per process, set at start-up
    _on_resume = hook


def resumed(host: str, direction: Direction) -> None:
    """A transfer with `host` went on after a break."""
    if _on_resume is not None:
        _on_resume(host, direction)
