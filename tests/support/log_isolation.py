"""Each test starts with the logging configuration the session had: a test that configures
logging (the CLI in process, `logs.configure` at warning) would otherwise filter or reroute
the events a later test captures with `structlog.testing.capture_logs`."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put structlog's configuration and the root logger back as they were before the test."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
