#!/usr/bin/env bash
# The images of docker-compose.yml, built from docker/*/Dockerfile on the debian:bookworm-slim
# that docker/base-image.sh makes (debootstrap + docker import) where no registry can be
# reached. scripts/test.sh starts this in the background while it compiles (the builds wait
# mostly on downloads and disks), and scripts/docker-test.sh waits for it.
#   scripts/docker-images.sh [STATUS_FILE]   # writes its exit status there when done
set -uo pipefail
cd "$(dirname "$0")/.."
status_file=${1:-}
build() {
  set -e
  local compose=(docker compose -p distlock-test)
  docker compose version >/dev/null 2>&1 || compose=(docker-compose -p distlock-test)
  local started
  started=$(date +%s)
  docker/base-image.sh
  echo "    base image: $(( $(date +%s) - started ))s"
  "${compose[@]}" build -q
  echo "    images: $(( $(date +%s) - started ))s"
}
(build)
status=$?
[ -z "$status_file" ] || echo "$status" >"$status_file"
exit "$status"
