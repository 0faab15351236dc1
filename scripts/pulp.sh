#!/usr/bin/env bash
# Builds the virtual environment of Pulp (pulp-container, the registry behind Red Hat Satellite),
# the second registry implementation of the opt-in Pulp tests, in $REPLICATOR_PULP_VENV (default
# .pulp-venv), apart from replicator's own: its Django stack must not meet replicator's pins.
# Then run the tests with REPLICATOR_TEST_PULP=1 (PostgreSQL is needed, as for the journal tests):
#     scripts/pulp.sh && REPLICATOR_TEST_PULP=1 .venv/bin/pytest tests/integration/test_pulp.py
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${REPLICATOR_PULP_VENV:-.pulp-venv}"
# The release the tests were written against: its mount answer is what they check.
version="2.30.0"
if [ -x "$venv/bin/pulpcore-manager" ] && "$venv/bin/pip" show pulp-container 2>/dev/null | grep -qx "Version: $version"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "pulp-container==$version"
echo "pulp: $venv ready (pulp-container $version)"
