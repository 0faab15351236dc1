#!/usr/bin/env bash
# The test command: sets everything up on a fresh machine, then runs lint, types and the suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
REPLICATOR_WITH_POSTGRES=${REPLICATOR_WITH_POSTGRES:-1} scripts/setup.sh
.venv/bin/ruff check replicator tests bench
.venv/bin/ruff format --check replicator tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
