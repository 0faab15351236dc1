#!/usr/bin/env bash
# Installs everything replicator's demo and tests need, on a fresh Debian machine, idempotently:
# Debian's docker-registry (CNCF distribution), mosquitto and skopeo (apt-get, when missing), and a
# virtual environment in .venv with replicator and its dev tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The proxy tests put a real forward proxy in front of the registries.
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || need+=(tinyproxy)
if [ "${REPLICATOR_WITH_POSTGRES:-0}" = 1 ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian packages start their services under systemd; we run our own on free ports instead.

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.replicator-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing replicator and its dev tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev,bench]'
  touch "$stamp"
fi
# An editable install leaves replicator/ uncompiled, and with PYTHONDONTWRITEBYTECODE set (as on
# CI machines) Python would recompile it on every command start (~0.2 s each): compile it now,
# as pip does for a regular install. Stale files are revalidated by mtime, so this is always safe.
.venv/bin/python -m compileall -q replicator >/dev/null
