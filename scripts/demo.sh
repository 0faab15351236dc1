#!/usr/bin/env bash
# The main job on a local default: installs what is missing, starts two registries on 127.0.0.1
# (a source and a destination, CNCF distribution from Debian), pushes a sample multi-platform image
# with skopeo, replicates it with `replicator copy`, and checks the digests with skopeo.
# Servers and data live in .demo/ and are stopped at the end; re-running starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
demo=$PWD/.demo
src_port=${DEMO_SRC_PORT:-5001}
dst_port=${DEMO_DST_PORT:-5002}

stop_all() {
  for pidfile in "$demo"/*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}
stop_all
trap stop_all EXIT
rm -rf "$demo" && mkdir -p "$demo"

start_registry() {  # name port
  mkdir -p "$demo/$1"
  cat > "$demo/$1.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $demo/$1}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$2}
YAML
  docker-registry serve "$demo/$1.yml" >"$demo/$1.log" 2>&1 &
  echo $! >"$demo/$1.pid"
  for _ in $(seq 50); do
    curl -fs "http://127.0.0.1:$2/v2/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "demo: registry $1 did not start on 127.0.0.1:$2 (see $demo/$1.log)" >&2
  return 1
}
start_registry source "$src_port"
start_registry destination "$dst_port"
echo "demo: registries up: source 127.0.0.1:$src_port, destination 127.0.0.1:$dst_port"

.venv/bin/python scripts/sample_image.py "$demo/layout" >/dev/null
skopeo copy --quiet --all --preserve-digests --dest-tls-verify=false \
  "oci:$demo/layout:v1" "docker://127.0.0.1:$src_port/prod/web:v1"
echo "demo: pushed prod/web:v1 (a two-platform index) to the source with skopeo"

echo "demo: replicator copy 127.0.0.1:$src_port/prod/web:v1 127.0.0.1:$dst_port/prod/web:v1"
.venv/bin/replicator copy "127.0.0.1:$src_port/prod/web:v1" "127.0.0.1:$dst_port/prod/web:v1"
echo "demo: copying again transfers nothing:"
.venv/bin/replicator copy "127.0.0.1:$src_port/prod/web:v1" "127.0.0.1:$dst_port/prod/web:v1"

src_digest=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$src_port/prod/web:v1" | sha256sum | cut -d' ' -f1)
dst_digest=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$dst_port/prod/web:v1" | sha256sum | cut -d' ' -f1)
echo "demo: source      prod/web:v1 = sha256:$src_digest"
echo "demo: destination prod/web:v1 = sha256:$dst_digest"
if [ "$src_digest" != "$dst_digest" ]; then
  echo "demo: FAILED: digests differ" >&2
  exit 1
fi
echo "demo: ok: identical digests (checked by skopeo); servers stopped"
