#!/usr/bin/env bash
# Makes the image every Dockerfile here starts FROM, debian:bookworm-slim, when the Docker engine
# lacks it and no registry can be reached to pull it: a minimal Debian root filesystem
# (debootstrap --variant=minbase bookworm, from the same package archive as the host's packages)
# imported with `docker import` under that tag. Idempotent: an engine that has the tag keeps it.
#
#   docker/base-image.sh [PACKAGE...]
#
# PACKAGEs, if given, are installed into the root filesystem before the import, for machines
# whose containers cannot reach the package archive; the Dockerfiles skip what is installed.
set -euo pipefail
tag=debian:bookworm-slim
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "    $tag: already in the engine"
  exit 0
fi
if timeout 60 docker pull -q "$tag" >/dev/null 2>&1; then
  echo "    $tag: pulled"
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "    installing debootstrap"
  $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q debootstrap >/dev/null
fi

started=$(date +%s)
rootfs=$(mktemp -d "${TMPDIR:-/tmp}/distlock-rootfs-XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
include=()
if [ $# -gt 0 ]; then
  include=(--include="$(IFS=,; echo "$*")")
fi
echo "    debootstrap --variant=minbase${include[*]:+ ${include[*]}} bookworm from $mirror"
if ! debootstrap --variant=minbase "${include[@]}" bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
  tail -20 "$rootfs.log"
  rm -f "$rootfs.log"
  echo "debootstrap failed: check that $mirror is reachable (or set DEBIAN_MIRROR to a mirror that is)" >&2
  exit 1
fi
rm -f "$rootfs.log"
# What the slim image does too: no package lists or caches in the image.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | docker import - "$tag" >/dev/null
echo "    $tag: made with debootstrap in $(( $(date +%s) - started ))s"
