#!/usr/bin/env bash
# Installs everything replicator's demo and tests need, on a fresh Debian machine, idempotently:
# Debian's docker-registry (CNCF distribution), mosquitto and skopeo (apt-get, when missing), and a
# virtual environment in .venv with replicator and its dev tools at the versions of
# requirements.lock. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The alert rules in configs/ are tested with Prometheus's promtool.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The proxy tests put a real forward proxy in front of the registries.
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || need+=(tinyproxy)
# The image test builds the Dockerfile with buildah on a base mmdebstrap makes (scripts/image.sh).
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
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
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  echo "setup: installing the locked packages and replicator into .venv"
  # Exactly the versions of requirements.lock, each file checked against its sha256: what the
  # index serves today changes nothing (scripts/lock.sh is the one way to move a version).
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
    -r requirements.lock
  # The project itself, built by the locked setuptools (no build isolation: nothing unlocked
  # is fetched to build it) and without dependencies: they all came from the lock.
  # setuptools warns on every editable build that a folder named like the package takes
  # precedence (that is the point of it): its output is shown only if the build fails.
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
      --no-build-isolation -e . >.venv/editable-install.log 2>&1; then
    cat .venv/editable-install.log >&2
    exit 1
  fi
  # The lock is complete and consistent: every requirement of every installed package is met.
  .venv/bin/python -m pip check >/dev/null
  touch "$stamp"
fi
# An editable install leaves replicator/ uncompiled, and with PYTHONDONTWRITEBYTECODE set (as on
# CI machines) Python would recompile it on every command start (~0.2 s each): compile it now,
# as pip does for a regular install. Stale files are revalidated by mtime, so this is always safe.
.venv/bin/python -m compileall -q replicator >/dev/null
