#!/usr/bin/env bash
# The suites against the containers of docker-compose.yml, as its users run them:
#   1. the images (scripts/docker-images.sh: built from docker/*/Dockerfile on a
#      debian:bookworm-slim that docker/base-image.sh makes where no registry can be reached),
#      waited for where scripts/test.sh started their build in the background;
#   2. the compose project up under its own name; `up -d` returns once all six members are healthy;
#   3. the conformance suites on the 3-node etcd cluster and the 3-node ZooKeeper ensemble, the
#      smoke tests that use shared servers, and the quickstart on both URLs;
#   4. one member of each cluster killed (SIGKILL), and the conformance suites again: every
#      hand-off still happens with the survivors;
#   5. `down -v`, also when a step failed, and a check that nothing of the project is left.
# scripts/test.sh runs this where `docker info` works. Exit status 0 when every step passed.
set -euo pipefail
cd "$(dirname "$0")/.."

project=distlock-test
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose -p "$project")
else
  if ! command -v docker-compose >/dev/null 2>&1; then
    echo "    installing docker-compose"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q docker-compose >/dev/null
  fi
  compose=(docker-compose -p "$project")
fi
etcd=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
zk=127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183

step_started=$(date +%s)
step() {
  local now
  now=$(date +%s)
  echo "    ($(( now - step_started ))s)"
  step_started=$now
  echo "--> $*"
}

down() {
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
}
left_of_project() {
  local label="label=com.docker.compose.project=$project"
  docker ps -aq --filter "$label"
  docker volume ls -q --filter "$label"
  docker network ls -q --filter "$label"
}
status=0
finish() {
  # A step that failed under `set -e` ends the script here too.
  [ $? -eq 0 ] || status=1
  step "${compose[*]} down -v"
  down
  local left
  left=$(left_of_project)
  if [ -n "$left" ]; then
    echo "the compose project left containers, volumes or networks behind: $left"
    status=1
  fi
  step "done, exit $status"
  exit $status
}
trap finish EXIT
# A project an interrupted run left behind would hold the ports.
down

etcd_revision() {
  "${compose[@]}" exec -T etcd2 etcdctl --endpoints=http://127.0.0.1:2379 endpoint status -w json \
    | grep -o '"revision":[0-9]*' | cut -d: -f2
}
zk_zxid() {
  "${compose[@]}" exec -T zk2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/2181; printf srvr >&3; cat <&3' \
    | sed -n 's/^Zxid: //p'
}
# Every cargo command here selects --workspace --all-features: the feature set scripts/test.sh's
# `cargo test` built with, so nothing is compiled again (one package alone, or an example with
# only some features, unifies other features and rebuilds the whole tokio tree).
suites() {
  DISTLOCK_TEST_ETCD_CLUSTER=$etcd DISTLOCK_TEST_ZK_CLUSTER=$zk \
    cargo test -q --workspace --all-features --test conformance_etcd_cluster --test conformance_zk_ensemble
}
# The quickstart on both URLs; both run, whichever fails.
quickstarts() {
  local failed=0 url
  cargo build -q --workspace --all-features --examples || return 1
  for url in "etcd://$etcd/quickstart" "zk://$zk/quickstart"; do
    target/debug/examples/quickstart "$url" >/dev/null || failed=1
  done
  return $failed
}

echo "--> ${compose[*]} config -q"
"${compose[@]}" config -q
if [ -n "${DISTLOCK_IMAGES_STATUS:-}" ]; then
  # scripts/test.sh started the build in the background.
  step "the images (scripts/docker-images.sh, started by scripts/test.sh)"
  for _ in $(seq 1800); do [ -s "$DISTLOCK_IMAGES_STATUS" ] && break; sleep 1; done
  cat "${DISTLOCK_IMAGES_LOG:-/dev/null}" || true
  [ "$(cat "$DISTLOCK_IMAGES_STATUS" 2>/dev/null)" = 0 ] || { echo "the images did not build"; exit 1; }
else
  step "the images (scripts/docker-images.sh)"
  scripts/docker-images.sh
fi
step "${compose[*]} up -d"
"${compose[@]}" up -d
step "conformance (3-node etcd, 3-node ZooKeeper), smoke tests and quickstart against the containers"
before="$(etcd_revision) $(zk_zxid)"
suites || status=1
# The smoke tests that use the shared servers (the others start their own clusters).
DISTLOCK_TEST_ETCD=$etcd DISTLOCK_TEST_ZK=$zk \
  cargo test -q --workspace --all-features --test smoke_etcd --test smoke_zk -- shared_ four_letter \
  || status=1
quickstarts || status=1
after="$(etcd_revision) $(zk_zxid)"
echo "    etcd revision and ZooKeeper zxid before: $before, after: $after"
if [ "${before%% *}" = "${after%% *}" ] || [ "${before##* }" = "${after##* }" ]; then
  echo "the suites did not write to the containers"
  status=1
fi
step "${compose[*]} kill etcd1 zk1, then conformance again on the survivors"
"${compose[@]}" kill etcd1 zk1
suites || status=1
quickstarts || status=1
