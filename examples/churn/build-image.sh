#!/usr/bin/env bash
# Builds weir-example/sklearn:latest, the image every step of the churn
# example runs: a minimal Debian bookworm root with Python and Debian's
# scikit-learn (python3-sklearn) and nothing else, imported into Docker,
# since no container registry can be reached. Needs root (debootstrap).
# Usage: examples/churn/build-image.sh   (does nothing when the image is there)
set -euo pipefail
image=weir-example/sklearn:latest
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image is there"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
debootstrap --variant=minbase --include=python3-sklearn bookworm "$root" "$mirror" >"$root.log" 2>&1 ||
  { tail -20 "$root.log"; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
  - "$image" >/dev/null
echo "built $image ($(docker image inspect "$image" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
