"""`copy` draws its progress line on a terminal (a pty here) and nothing in a pipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.copy_corpus import CopyCorpus
from tests.support.registry_server import Registry
from tests.support.terminal import last_line, on_terminal

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 120


def copy_on_terminal(*args: str) -> tuple[int, str]:
    """`replicator copy ARGS` with stderr on a pseudo-terminal: exit code and what it drew."""
    return on_terminal([sys.executable, "-m", "replicator", "copy", *args])


class TestProgress:
    def test_terminal_shows_images_bytes_rate_and_eta(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """On a terminal the line is redrawn in place and ends with every image done."""
        tags = len(copy_corpus.tags("team/app"))
        code, drawn = copy_on_terminal(
            "--all-tags", copy_corpus.ref("team/app"), f"{dst_registry.host}/team/app"
        )
        assert code == 0, drawn
        last = last_line(drawn)
        assert drawn.count("\r") > 1
        assert f"{tags}/{tags} images" in last
        assert " MB, " in last
        assert "MB/s" in last
        assert "ETA 0:00" in last

    def test_single_image_on_terminal(
        self, copy_corpus: CopyCorpus, dst_registry: Registry
    ) -> None:
        """One image counts as one of one."""
        code, drawn = copy_on_terminal(
            copy_corpus.ref("team/app", "v1"), f"{dst_registry.host}/team/app:v1"
        )
        assert code == 0, drawn
        assert "1/1 images" in drawn

    def test_pipe_gets_no_progress(self, copy_corpus: CopyCorpus, dst_registry: Registry) -> None:
        """In a pipe (cron, CI, systemd) nothing is drawn: no carriage return, no rate."""
        done = subprocess.run(
            [sys.executable, "-m", "replicator", "copy", "--all-tags",
             copy_corpus.ref("team/app"), f"{dst_registry.host}/team/app"],
            capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "\r" not in done.stderr
        assert "MB/s" not in done.stderr
