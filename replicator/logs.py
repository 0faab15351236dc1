"""One logging pipeline: coloured lines on a terminal, JSON lines under systemd or in a pipe.

Our events go through structlog; the standard library's records (aiomqtt, asyncio, SQLAlchemy)
go through the same processors by way of structlog's `ProcessorFormatter` on the root logger,
and so do `warnings.warn` (logger `py.warnings`) and an uncaught exception (`uncaught_exception`,
level critical), so a journald or Loki reader never meets a plain-text line among the JSON ones.

When stderr is the journal's stream (systemd sets $JOURNAL_STREAM to its `device:inode`), each
line starts with its syslog priority, `<3>{"event": ...}` for an error (sd-daemon(3)): journald
takes the level from it, so `journalctl -p err` finds errors, and stores the JSON after it.

Key names: `source` and `destination` are registry names from the config; `source_image` and
`destination_image` are `host/repository` references; `host` is a registry's `host[:port]`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import types
from collections.abc import Mapping, MutableMapping
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
# The variable systemd sets for a service whose stdout/stderr go to the journal: "device:inode"
# of that stream (systemd.exec(5)).
JOURNAL_STREAM_VAR = "JOURNAL_STREAM"
# sd-daemon(3) priorities (syslog's) by our level names; a level not listed is logged as info.
SYSLOG_PRIORITIES = {
    "critical": 2,
    "error": 3,
    "exception": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
_INFO_PRIORITY = 6
# Whether the last configure() chose JSON lines (read by the CLI for its last words).
_structured = False


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


def stderr_is_journal(environ: Mapping[str, str] | None = None) -> bool:
    """Whether stderr is the stream $JOURNAL_STREAM names (its device and inode): a variable
    inherited by a child whose stderr was redirected elsewhere does not count."""
    env = os.environ if environ is None else environ
    device, colon, inode = env.get(JOURNAL_STREAM_VAR, "").partition(":")
    if not colon or not device.isdigit() or not inode.isdigit():
        return False
    try:
        status = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # no real file behind sys.stderr
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


class PriorityPrefix:
    """Wraps a renderer: its line prefixed with the event's syslog priority, `<N>`."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        priority = SYSLOG_PRIORITIES.get(str(event.get("level", method)), _INFO_PRIORITY)
        return f"<{priority}>{self._renderer(logger, method, event)}"


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: types.TracebackType | None
) -> None:
    """sys.excepthook: an exception nothing caught, as one critical JSON line."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    get_logger(__name__).critical("uncaught_exception", exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: a thread's exception nothing caught, as one critical JSON line."""
    if args.exc_value is None:
        return
    get_logger(__name__).critical(
        "uncaught_exception",
        thread=args.thread.name if args.thread else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _shared() -> list[Any]:
    """The processors every line goes through, ours and the standard library's alike."""
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_secrets,
        structlog.processors.format_exc_info,
    ]


def configure(*, level: str = "info", json: bool | None = None) -> None:
    """Configure structlog and the root logger; `json` defaults to "stderr is not a terminal".

    With JSON lines, `warnings.warn` and uncaught exceptions are logged too, and on the
    journal's stream every line carries its priority."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=True)
    )
    if json and stderr_is_journal():
        renderer = PriorityPrefix(renderer)
    global _structured  # noqa: PLW0603 - one process, one logging configuration
    _structured = json
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
    logging.captureWarnings(json)
    sys.excepthook = _log_uncaught if json else sys.__excepthook__
    threading.excepthook = _log_uncaught_in_thread if json else threading.__excepthook__


def structured() -> bool:
    """Whether log lines are JSON (the last configure() said so)."""
    return _structured


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger carrying the module name as `logger_name`."""
    # Not `logger=`: structlog.get_logger passes it on to wrap_logger, whose first parameter is
    # named `logger`, and raises TypeError.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(logger_name=name)
    return logger
