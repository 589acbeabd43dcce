#!/usr/bin/env bash
# The one test command: installs what is missing, then formatting, lints, the quickstart's
# build without protoc, the docs, every test with every feature (the tests start their own etcd,
# ZooKeeper and Redis servers; the Redis suites run again on Redis 6.2), the quickstart, the
# suites against docker-compose.yml's containers (where a Docker engine runs); the crates'
# packages are verified beside the tests.
# Afterwards it checks that no server process of the tests is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Docker engine, if installed but not running (the compose file's containers need it).
if ! docker info >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "==> starting dockerd"
  (dockerd >/tmp/distlock-dockerd.log 2>&1 &)
  for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)  # the Curator interop peer
[ -f /usr/share/java/curator-recipes.jar ] || missing+=(libcurator-recipes-java)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # test certificates for etcd over TLS
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if docker info >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)  # the base image, without a registry
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${missing[@]}"
fi

# The compose file's images build in the background while the crates compile (scripts/docker-images.sh);
# scripts/docker-test.sh waits for them.
if docker info >/dev/null 2>&1; then
  images_dir=$(mktemp -d)
  export DISTLOCK_IMAGES_STATUS="$images_dir/status" DISTLOCK_IMAGES_LOG="$images_dir/log"
  (scripts/docker-images.sh "$DISTLOCK_IMAGES_STATUS" >"$DISTLOCK_IMAGES_LOG" 2>&1 &)
fi

# So does Redis 6.2's redis-server (scripts/redis-6.2.sh), for the Redis suites' second run below.
redis62_dir=$(mktemp -d)
(scripts/redis-6.2.sh >"$redis62_dir/path" 2>"$redis62_dir/log"; echo $? >"$redis62_dir/status") &
redis62_pid=$!

leftovers() {
  # Servers the harness started run with data in a distlock-test-* dir under this run's TMPDIR.
  pgrep -af "$TMPDIR/distlock-test-" | grep -E 'etcd|java|redis' || true
}

verify_packages() {
  # cargo verifies each crate against the others' packages through a local registry, and treats
  # a registry crate's version as immutable: it reuses the sources it unpacked and the libraries
  # it built for that version in an earlier run at the same path. So the verification builds in
  # a target dir of its own, and ours are removed from it and from the unpacked sources first,
  # or a second run would verify against the first run's code.
  local verify=target/package-verify
  rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/distlock-* \
    "$verify"/debug/.fingerprint/distlock* "$verify"/debug/deps/*distlock*
  local low=(nice -n 19)
  command -v ionice >/dev/null 2>&1 && low=(ionice -c 3 nice -n 19)
  CARGO_TARGET_DIR=$verify "${low[@]}" cargo package -q --workspace --exclude distlock-tests \
    --exclude distlock-bench --allow-dirty
}

started=$(date +%s)
# A test process that dies of a signal leaves a core file, and scripts/crash-report.sh prints its
# threads' stacks at the end (the kernel's core_pattern permitting).
ulimit -c unlimited 2>/dev/null || true
scripts/crash-report.sh >/dev/null || true   # an earlier run's
# Every temp dir of this run (servers' data and logs, fault-suite histories) under one directory
# of its own, removed at the end: a second run on the same machine keeps its own.
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/distlock-run-XXXXXX")
export TMPDIR
status=0
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The facade as most users build it: no backend features (mem:// only); and without metrics.
cargo clippy -q -p distlock -- -D warnings
cargo clippy -q -p distlock --no-default-features -- -D warnings
echo "==> the quickstart builds with nothing but cargo: no protoc, no server client, no harness"
# What a new user's first `cargo run --example quickstart` compiles: the facade without features
# and its dev-dependencies. Neither server client nor the test harness may be in that graph, and a
# cold build must not need protoc (PROTOC points at a program that fails).
graph=$(cargo tree -q -p distlock -e normal,dev --prefix none --format '{p}')
if grep -qE '^(etcd-client|zookeeper-client|redis|distlock-tests|tonic|prost) ' <<<"$graph"; then
  echo "the quickstart's dependency graph pulls a server client or the harness:"
  grep -E '^(etcd-client|zookeeper-client|redis|distlock-tests|tonic|prost) ' <<<"$graph" | sort -u
  status=1
fi
if PROTOC=/bin/false CARGO_TARGET_DIR=target/first-hour cargo build -q --example quickstart; then
  # Ten runs: each checks that the lock was granted in the order the entries queued.
  for run in $(seq 10); do
    target/first-hour/debug/examples/quickstart >/dev/null || { echo "quickstart run $run failed"; status=1; }
  done
else
  echo "the quickstart does not build without protoc"
  status=1
fi

echo "==> cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc -q --workspace --all-features --no-deps || status=1

echo "==> cargo test (and, beside it, the crates' packages)"
# The tests' build first; then the crates package for crates.io (each verified to build from its
# package alone) in the background, at the lowest CPU and I/O priority, while the tests (mostly
# waiting on servers) run; the fault suite, the most timing-bound, runs after both.
cargo test --workspace --all-features --no-run 2>&1 | tee "$TMPDIR/no-run.log" || status=$?
package_log="$TMPDIR/package.log"
(verify_packages >"$package_log" 2>&1; echo $? >"$package_log.status") &
package_pid=$!
cargo test --workspace --all-features -- --skip fault_suite || status=$?
echo "==> the crates package for crates.io (each verified to build from its package alone)"
wait "$package_pid" || true
cat "$package_log"
[ "$(cat "$package_log.status" 2>/dev/null)" = 0 ] || { echo "the crates' packages did not verify"; status=1; }
echo "==> the fault suite (tests/tests/faults.rs)"
# Its binary as the build above made it: `cargo test --test faults` selects other targets, and
# with them other features of the dev-dependencies, and would rebuild the workspace.
faults_bin=$(sed -n 's|.*Executable tests/faults.rs (\(.*\))$|\1|p' "$TMPDIR/no-run.log")
if [ -x "$faults_bin" ]; then
  (cd tests && "../$faults_bin") || status=$?
else
  echo "the fault suite's binary was not built"
  status=1
fi
echo "==> quickstart (mem://, no server)"
# The first-hour build above: the facade with its default features has a feature set (and so a
# dependency build) of its own, made once.
CARGO_TARGET_DIR=target/first-hour cargo run -q --example quickstart >/dev/null || status=$?
echo "==> metrics example (mem://, the scrape it prints)"
# Built by `cargo test` above. Its scrape must count the loss it causes.
scrape=$(target/debug/examples/metrics) || status=1
grep -q '^distlock_losses_total{backend="mem",recipe="lock",name="jobs/nightly-report",reason="session_expired"} 1$' <<<"$scrape" \
  || { echo "the metrics example's scrape lacks its loss"; status=1; }

echo "==> quickstart on Redis (a redis-server of its own, no persistence)"
# Built by `cargo test` above with every feature: the same program as on mem://, given a redis:// URL.
redis_dir=$(mktemp -d)
# A port below the kernel's ephemeral range (32768 up), where no test server or outgoing
# connection takes one; a daemonized redis-server that cannot bind it exits after its parent
# returned 0, so the port counts as ours only once it answers, and a taken one is tried again.
redis_up=""
for _ in 1 2 3 4 5; do
  redis_port=$((20000 + RANDOM % 12000))
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$redis_dir" --save "" --appendonly no \
    --daemonize yes --pidfile "$redis_dir/pid.$redis_port" --logfile "$redis_dir/log" || continue
  for _ in $(seq 50); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && { redis_up=yes; break; }
    sleep 0.1
  done
  [ -n "$redis_up" ] && break
done
if [ -n "$redis_up" ]; then
  target/debug/examples/quickstart "redis://127.0.0.1:$redis_port/0?prefix=quickstart" >/dev/null || status=$?
else
  echo "redis-server did not start on any of five ports:"; tail -5 "$redis_dir/log"; status=1
fi
for pidfile in "$redis_dir"/pid.*; do kill "$(cat "$pidfile")" 2>/dev/null || true; done

echo "==> the Redis suites again, on Redis 6.2 (the oldest Redis the backend supports)"
wait "$redis62_pid" || true
if [ "$(cat "$redis62_dir/status" 2>/dev/null)" = 0 ]; then
  # Built by `cargo test` above; the harness starts the redis-server DISTLOCK_REDIS_SERVER names,
  # and a test checks that it reports the version asked for. The TLS test is left out: this
  # build has no TLS.
  export DISTLOCK_REDIS_SERVER DISTLOCK_REDIS_VERSION=6.2.
  DISTLOCK_REDIS_SERVER=$(cat "$redis62_dir/path")
  cargo test -q --workspace --all-features --test conformance_redis --test redis_backend -- --skip rediss --skip acknowledged:: \
    || status=$?
  cargo test -q --workspace --all-features --test cli redis_backend || status=$?
  unset DISTLOCK_REDIS_SERVER DISTLOCK_REDIS_VERSION
else
  echo "Redis 6.2 did not build:"
  tail -20 "$redis62_dir/log"
  status=1
fi
rm -rf "$redis62_dir"

# The path a docker-compose setup uses: servers already running, named by DISTLOCK_TEST_* variables.
# With a Docker engine: the compose file's own containers, built from docker/ (scripts/docker-test.sh).
# Without one: servers started natively by the harness's test_servers helper.
if docker info >/dev/null 2>&1; then
  echo "==> against the containers of docker-compose.yml (scripts/docker-test.sh)"
  scripts/docker-test.sh || status=1
else
  echo "==> no Docker engine here ('docker info' failed): the compose file's containers are not tested;"
  echo "    the same suites run against natively started servers named by DISTLOCK_TEST_ETCD / DISTLOCK_TEST_ZK"
  cargo build -q -p distlock-tests --bin test_servers
  coproc SERVERS { exec target/debug/test_servers; }
  read -r -t 90 etcd_line <&"${SERVERS[0]}" || true
  read -r -t 90 zk_line <&"${SERVERS[0]}" || true
  if [[ "$etcd_line" == DISTLOCK_TEST_ETCD=* && "$zk_line" == DISTLOCK_TEST_ZK=* ]]; then
    export "$etcd_line" "$zk_line"
    echo "    $etcd_line $zk_line"
    # --workspace: the feature set `cargo test` above built with, so nothing is compiled again.
    cargo test -q --workspace --all-features --test conformance_etcd --test conformance_zk --test smoke_etcd --test smoke_zk || status=$?
    cargo build -q --workspace --all-features --examples || status=$?
    target/debug/examples/quickstart "etcd://$DISTLOCK_TEST_ETCD/quickstart" >/dev/null || status=$?
    target/debug/examples/quickstart "zk://$DISTLOCK_TEST_ZK/quickstart" >/dev/null || status=$?
    unset DISTLOCK_TEST_ETCD DISTLOCK_TEST_ZK
  else
    echo "test_servers did not start the servers"
    status=1
  fi
  eval "exec ${SERVERS[1]}>&-"   # closing its stdin stops the servers
  wait "$SERVERS_PID" 2>/dev/null || true
fi

scripts/crash-report.sh || status=1
left=$(leftovers)
if [ -n "$left" ]; then
  echo "==> server processes were left running by the tests:"
  echo "$left"
  pkill -9 -f "$TMPDIR/distlock-test-" || true
  status=1
fi
# Shared test servers keep their data in temp dirs for the whole test binary; remove this run's
# now that every server process is gone.
rm -rf "$TMPDIR" 2>/dev/null || true
echo "==> done in $(( $(date +%s) - started ))s, exit $status"
exit $status
