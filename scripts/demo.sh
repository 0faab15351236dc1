#!/usr/bin/env bash
# The main job on a local default, with configs/demo.toml:
#   mosquitto (the bus) and three registries on 127.0.0.1 — use1 (the source, its webhooks
#   pointed at the bridge), usw2 (same account, another region) and euw1 (another account whose
#   policy admits only prod/) — plus `replicator bridge` and `replicator run`. It pushes a
#   two-platform prod/web image and a dev/tool image with skopeo, then shows that prod/web reached
#   both destinations with the same digest and dev/tool was refused by euw1's policy.
# Everything runs from .demo/ and is stopped when the script ends; re-running starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
demo=$PWD/.demo
config=$PWD/configs/demo.toml
journal=/tmp/replicator-demo-journal.db   # as configs/demo.toml says
replicator=$PWD/.venv/bin/replicator
say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }

stop_all() {
  for pidfile in "$demo"/*.pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}
stop_all
trap 'stop_all; say "servers stopped (logs kept in .demo/)"' EXIT
rm -rf "$demo" "$journal" "$journal-wal" "$journal-shm"
mkdir -p "$demo"

wait_http() {  # url what
  for _ in $(seq 100); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "demo: $2 did not come up ($1); see $demo/" >&2
  return 1
}

start() {  # name command...
  local name=$1
  shift
  "$@" >"$demo/$name.log" 2>&1 &
  echo $! >"$demo/$name.pid"
}

cat >"$demo/mosquitto.conf" <<EOF
listener 1883 127.0.0.1
allow_anonymous true
persistence true
persistence_location $demo/
EOF
start mosquitto /usr/sbin/mosquitto -c "$demo/mosquitto.conf"

registry() {  # name port [webhook-url]
  mkdir -p "$demo/$1"
  {
    echo "version: 0.1"
    echo "log: {level: warn}"
    echo "storage: {filesystem: {rootdirectory: $demo/$1}, delete: {enabled: true}}"
    echo "http: {addr: 127.0.0.1:$2}"
    if [ -n "${3:-}" ]; then
      cat <<EOF
notifications:
  endpoints:
    - name: replicator-bridge
      url: $3
      timeout: 2s
      threshold: 10
      backoff: 1s
      ignoredmediatypes: [application/octet-stream]
      ignore: {actions: [pull]}
EOF
    fi
  } >"$demo/$1.yml"
  start "registry-$1" docker-registry serve "$demo/$1.yml"
  wait_http "http://127.0.0.1:$2/v2/" "registry $1"
}
registry use1 5001 http://127.0.0.1:9479/events/use1
registry usw2 5002
registry euw1 5003
say "mosquitto on 127.0.0.1:1883; registries use1 :5001 (source), usw2 :5002, euw1 :5003"

"$replicator" config check "$config" | sed 's/^/    /'
start bridge "$replicator" --log-level info bridge --config "$config"
start daemon "$replicator" --log-level info run --config "$config"
wait_http http://127.0.0.1:9479/healthz "the bridge"
wait_http http://127.0.0.1:9478/readyz "the daemon"
say "bridge on :9479 (use1's webhooks), daemon ready on :9478"

.venv/bin/python scripts/sample_image.py "$demo/layout" >/dev/null
push() {  # tag repository
  skopeo copy --quiet --all --preserve-digests --dest-tls-verify=false \
    "oci:$demo/layout:$1" "docker://127.0.0.1:5001/$2:v1"
}
push v1 prod/web
push tool dev/tool
say "pushed prod/web:v1 (two platforms) and dev/tool:v1 to use1 with skopeo"

settled() {  # repository: true when no destination is still in progress
  local out
  out=$("$replicator" status --config "$config" --repository "$1" --image-tag v1 --json 2>/dev/null) || return 1
  local want=$2
  [ "$(grep -c '"status": ' <<<"$out")" -ge "$want" ] && ! grep -q IN_PROGRESS <<<"$out"
}
for _ in $(seq 150); do
  settled prod/web 2 && settled dev/tool 2 && break
  sleep 0.1
done

echo
say "replicator status --repository prod/web --image-tag v1"
"$replicator" status --config "$config" --repository prod/web --image-tag v1 | sed 's/^/    /'
echo
say "replicator status --repository dev/tool --image-tag v1"
"$replicator" status --config "$config" --repository dev/tool --image-tag v1 | sed 's/^/    /'
echo

digest() { skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$1/$2:v1" 2>/dev/null | sha256sum | cut -c1-64; }
src=$(digest 5001 prod/web)
ok=1
for port in 5002 5003; do
  got=$(digest $port prod/web)
  if [ "$got" = "$src" ]; then mark="same digest"; else mark="DIFFERENT"; ok=0; fi
  say "prod/web:v1 at 127.0.0.1:$port = sha256:${got:0:16}… ($mark as use1, checked by skopeo)"
done
if curl -fs "http://127.0.0.1:5003/v2/dev/tool/tags/list" >/dev/null 2>&1; then
  say "dev/tool reached euw1 although its policy denies it"
  ok=0
else
  say "dev/tool is not at euw1: its policy admits only prod/ (POLICY_DENIED above)"
fi
latency=$(curl -fs http://127.0.0.1:9478/metrics | awk '
  /^replicator_replication_latency_seconds_sum/ {s+=$2}
  /^replicator_replication_latency_seconds_count/ {c+=$2}
  END {if (c) printf "%.0f ms mean over %d replications", 1000*s/c, c}')
say "push-to-replica latency: ${latency:-not measured}"
if [ "$ok" != 1 ]; then
  say "FAILED"
  exit 1
fi
say "ok"
