"""One logging pipeline: coloured lines on a terminal, JSON lines under systemd or in a pipe.

Our events go through structlog; the standard library's records (aiomqtt, asyncio, SQLAlchemy)
go through the same processors by way of structlog's `ProcessorFormatter` on the root logger,
so a journald or Loki reader never meets a plain-text line among the JSON ones.

Key names: `source` and `destination` are registry names from the config; `source_image` and
`destination_image` are `host/repository` references; `host` is a registry's `host[:port]`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# A key whose lower-cased name contains one of these has its value replaced, whatever the
# caller passed by mistake (`registry_password`, `client_secret`, `bearer_token`, ...).
SECRET_KEY_PARTS = ("password", "secret", "token", "authorization", "credential")
REDACTED = "[redacted]"
# Libraries that log every request at INFO (httpx: "HTTP Request: GET <url>", for each token
# fetch) or every socket event at DEBUG (httpcore): shown from WARNING on only.
CHATTY_LIBRARIES = ("httpx", "httpcore")
# The handler this module installs on the root logger, recognised so a second configure()
# replaces it rather than adding another (tests and the CLI may configure more than once).
_HANDLER_NAME = "replicator"


def is_secret_key(key: str) -> bool:
    """Whether a log field named `key` may carry a secret."""
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of every field whose name looks like a secret's."""
    for key in list(event):
        if is_secret_key(key):
            event[key] = REDACTED
    return event


def _stdlib_logger_name(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A standard-library record's logger name under the key our own events use."""
    record = event.get("_record")
    if record is not None:
        event["logger_name"] = record.name
    return event


class _Stderr:
    """Writes to whatever `sys.stderr` is now (test runners and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _shared() -> list[Any]:
    """The processors every line goes through, ours and the standard library's alike."""
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_secrets,
        structlog.processors.format_exc_info,
    ]


def configure(*, level: str = "info", json: bool | None = None) -> None:
    """Configure structlog and the root logger; `json` defaults to "stderr is not a terminal"."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=True)
    )
    number = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *_shared(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(_Stderr())
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                _stdlib_logger_name,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_shared(),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(number, logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger carrying the module name as `logger_name`."""
    # Not `logger=`: structlog.get_logger passes it on to wrap_logger, whose first parameter is
    # named `logger`, and raises TypeError.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(logger_name=name)
    return logger
