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
# In parallel: four pytest-xdist workers, each module on one worker (tests/support/parallel_runs.py).
# Most of the suite's time is waiting (outages, kill loops, server start-ups), not CPU, so four
# workers fit two cores. `scripts/test.sh -n 0` runs it in one process (for -s, --pdb).
exec .venv/bin/python -m pytest -q -n 4 --dist loadfile --no-loadscope-reorder "$@"
