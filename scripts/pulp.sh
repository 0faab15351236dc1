#!/usr/bin/env bash
# Pulp (pulp-container, the registry behind Red Hat Satellite): the second registry implementation
# of the test suite. Prints the path of its virtual environment, built on first use:
#
#   scripts/pulp.sh          # install (once) and print the venv's path
#   scripts/pulp.sh --lock   # re-pin requirements-pulp.lock (then run scripts/test.sh, commit it)
#
# The venv lives outside the clone, in $REPLICATOR_CACHE (default ~/.cache/replicator) as
# pulp-<first 16 hex of the lock's sha256>: every clone and every run on the machine shares it, and
# a new lock gets a new venv. It is installed from requirements-pulp.lock alone, every file checked
# against its sha256, apart from replicator's own venv and lock: Pulp's Django stack must not meet
# replicator's pins. tests/support/pulp_server.py keeps the migrated database schema beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements-pulp.lock

if [ "${1:-}" = --lock ]; then
  # The release the tests were written against; its closure pinned for CPython 3.11 on x86_64
  # Linux, as scripts/lock.sh pins replicator's.
  echo "pulp-container==2.30.0" \
    | .venv/bin/uv pip compile -q - --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --generate-hashes --no-header -o "$lock"
  echo "pulp: $lock written; now run scripts/test.sh" >&2
  exit 0
fi

cache="${REPLICATOR_CACHE:-$HOME/.cache/replicator}"
hash=$(sha256sum "$lock" | cut -c1-16)
venv="$cache/pulp-$hash"
stamp="$venv/.replicator-installed"
mkdir -p "$cache"
# One install at a time on the machine: test runs of several clones may start together.
exec 9>"$venv.lock"
flock 9
if [ ! -f "$stamp" ]; then
  echo "pulp: installing $lock into $venv (once per lock; a few minutes)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
    -r "$lock" >&2
  # The lock is the whole closure: every requirement of every installed package is met.
  "$venv/bin/python" -m pip check >&2
  touch "$stamp"
fi
echo "$venv"
