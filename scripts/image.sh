#!/usr/bin/env bash
# Builds the container image with buildah (Debian's package), as root, from the Dockerfile.
#
#   scripts/image.sh [TAG]                  # FROM the Dockerfile's digest-pinned base
#   scripts/image.sh --debian-base [TAG]    # FROM a base made here from Debian's own packages
#
# --debian-base makes `localhost/replicator-base:bookworm` with mmdebstrap (bookworm's python3,
# python3-venv, ca-certificates and passwd, from the host's Debian mirror) when it does not exist
# yet, and builds on it: what the suite does, on machines that reach Debian's and Python's
# package indexes but no image registry. The host's CA bundle is lent to the build so pip
# trusts what the host trusts (a TLS-inspecting proxy). TAG defaults to localhost/replicator:dev.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_base=0
if [ "${1:-}" = "--debian-base" ]; then
  debian_base=1
  shift
fi
tag=${1:-localhost/replicator:dev}
base=localhost/replicator-base:bookworm
# The project's own image store (REPLICATOR_IMAGE_STORE), so its driver never clashes with one
# the machine's other containers use; overlay where the kernel allows it (a vfs build copies
# the whole file system at each step: ten times slower here), else vfs.
store=${REPLICATOR_IMAGE_STORE:-/var/lib/replicator-image}
driver=vfs
probe=$(mktemp -d)
mkdir -p "$probe"/{lower,upper,work,merged}
if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
    "$probe/merged" 2>/dev/null; then
  umount "$probe/merged"
  driver=overlay
fi
rm -rf "$probe"
[ -f "$store/driver" ] && driver=$(cat "$store/driver")
mkdir -p "$store" && echo "$driver" >"$store/driver"
buildah=(buildah --root "$store/storage" --runroot "$store/run" --storage-driver "$driver")

need=()
command -v buildah >/dev/null 2>&1 || need+=(buildah)
[ "$debian_base" = 1 ] && { command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap); }
if [ ${#need[@]} -gt 0 ]; then
  echo "image: installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

args=()
if [ "$debian_base" = 1 ]; then
  if ! "${buildah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
    echo "image: making $base from Debian's packages (mmdebstrap, a few minutes)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # python-is-python3: the Dockerfile says `python`, as the official python images do.
    mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      bookworm "$work/base.tar"
    container=$("${buildah[@]}" from scratch)
    mount=$("${buildah[@]}" mount "$container")
    tar -xf "$work/base.tar" -C "$mount"
    "${buildah[@]}" umount "$container" >/dev/null
    "${buildah[@]}" commit -q "$container" "$base" >/dev/null
    "${buildah[@]}" rm "$container" >/dev/null
  fi
  args+=(--build-arg "BASE=$base")
fi
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ]; then
  args+=(--build-arg "PIP_CERT=$bundle" -v "$bundle:$bundle:ro")
fi
echo "image: building $tag"
# chroot isolation: no user namespaces needed, as root. --layers: an unchanged step is reused.
"${buildah[@]}" bud -q --layers --format docker --isolation chroot --network host "${args[@]}" -t "$tag" . >/dev/null
echo "image: $tag built (buildah ${buildah[*]:1})"
