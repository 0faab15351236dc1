"""The alert rules shipped in configs/ checked and unit-tested by Prometheus's own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "configs" / "prometheus-alerts.yml"
RULE_TESTS = ROOT / "tests" / "data" / "prometheus" / "alerts-test.yml"
# promtool evaluates a few hours of series in well under a second; generous for a loaded CI.
PROMTOOL_TIMEOUT_SECONDS = 60.0


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run Debian's promtool (package `prometheus`, installed by scripts/setup.sh)."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run scripts/setup.sh (it installs `prometheus`)")
    return subprocess.run(
        [binary, *args],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )


def test_rules_file_is_valid() -> None:
    """configs/prometheus-alerts.yml parses and every expression is valid PromQL."""
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_on_a_first_outage_and_clears_after_recovery() -> None:
    """The recovery-point, failed-jobs and unreachable-destination alerts fire during usw2's
    first outage (its series at 0 or 1 from the daemon's start) and clear once it recovered
    (tests/data/prometheus)."""
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
