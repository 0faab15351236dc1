#!/usr/bin/env bash
# The test command: sets everything up on a fresh machine, then runs lint, types and the suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
REPLICATOR_WITH_POSTGRES=${REPLICATOR_WITH_POSTGRES:-1} scripts/setup.sh
# Pulp, the suite's second registry implementation: its own venv, installed once per lock into
# ~/.cache/replicator (scripts/pulp.sh). If it cannot install, its tests fail saying why (the
# fixture tries again); REPLICATOR_TEST_PULP=0 leaves them out.
if [ "${REPLICATOR_TEST_PULP:-1}" != 0 ]; then
  scripts/pulp.sh >/dev/null || echo "test.sh: Pulp did not install; its tests will fail" >&2
fi
.venv/bin/ruff check replicator tests bench
.venv/bin/ruff format --check replicator tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
