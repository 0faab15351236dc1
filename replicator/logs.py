"""structlog configuration: coloured lines on a terminal, JSON lines under systemd or in a pipe."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are dropped from every event, whatever the caller passed by mistake.
_SECRET_KEYS = frozenset({"password", "token", "authorization", "secret", "credentials"})


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
    return event


class _Stderr:
    """Writes to whatever `sys.stderr` is now (test runners and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(*, level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once per process; `json` defaults to "stderr is not a terminal"."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger carrying the module name as `logger_name`."""
    # Not `logger=`: structlog.get_logger passes it on to wrap_logger, whose first parameter is
    # named `logger`, and raises TypeError.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(logger_name=name)
    return logger
