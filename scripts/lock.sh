#!/usr/bin/env bash
# Refreshes the lock: the one deliberate way an installed version changes.
#
#   scripts/lock.sh             # add what pyproject.toml gained; keep every other pin as it is
#   scripts/lock.sh --upgrade   # take the newest releases pyproject.toml allows
#   scripts/lock.sh --upgrade-package httpx   # move one package (and what it needs) only
#
# then run scripts/test.sh (setup.sh installs the new lock) and commit both files.
#
# requirements.lock holds every package any install of replicator takes (runtime, each extra, the
# dev tools, and pip/setuptools/wheel, which build the editable install without reaching the
# index) as exact versions with the sha256 of every file of that version. requirements-image.lock
# is the subset the container image installs (runtime + ecr + postgres), compiled *constrained by*
# requirements.lock, so every version in it is the lock's; tests/unit/test_dependencies.py checks
# both against pyproject.toml.
#
# uv's `pip compile`: one static binary from PyPI (in the dev extra, so .venv/bin/uv), reads
# pyproject.toml and its extras directly, hashes every file of each pinned version, keeps existing
# pins unless asked to move them, and resolves for a target interpreter and platform rather than
# the one it runs on. pip-tools does the same in Python but is several times slower and resolves
# only for the interpreter it runs in.
#
# Target: CPython 3.11 on x86_64 Linux (Debian bookworm's python3 and the image's). The hashes
# cover every file of each version, so other platforms install the same versions where their
# wheels exist.
set -euo pipefail
cd "$(dirname "$0")/.."

uv=${UV:-.venv/bin/uv}
if [ ! -x "$uv" ]; then
  echo "lock: $uv is missing: run scripts/setup.sh first (uv comes with the dev extra)" >&2
  exit 2
fi
target=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes)
# pip, and the build backend of [build-system] requires: setup.sh installs the project with
# --no-build-isolation, so these are what builds it, from the lock like everything else.
build=$(.venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
printf '%s\npip\n' "$build" \
  | "$uv" pip compile -q pyproject.toml - --all-extras "${target[@]}" "$@" -o requirements.lock
printf '%s\npip\n' "$build" \
  | "$uv" pip compile -q pyproject.toml - --extra ecr --extra postgres "${target[@]}" \
      -c requirements.lock -o requirements-image.lock
echo "lock: requirements.lock and requirements-image.lock written; now run scripts/test.sh"
