#!/usr/bin/env bash
# The one test command: installs what is missing, then formatting, lints, every test with every
# feature (the tests start their own etcd and ZooKeeper servers), and the quickstart.
# Afterwards it checks that no server process of the tests is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # test certificates for etcd over TLS
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${missing[@]}"
fi

leftovers() {
  # Servers the harness started run with data in a distlock-test-* dir under this run's TMPDIR.
  pgrep -af "$TMPDIR/distlock-test-" | grep -E 'etcd|java' || true
}

started=$(date +%s)
# Every temp dir of this run (servers' data and logs, fault-suite histories) under one directory
# of its own, removed at the end: a second run on the same machine keeps its own.
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/distlock-run-XXXXXX")
export TMPDIR
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The facade as most users build it: no backend features (mem:// only).
cargo clippy -q -p distlock -- -D warnings
echo "==> cargo test"
status=0
cargo test --workspace --all-features || status=$?
echo "==> quickstart (mem://, no server)"
cargo run -q --example quickstart >/dev/null || status=$?

# The path a docker-compose setup uses: servers already running, named by DISTLOCK_TEST_ETCD and
# DISTLOCK_TEST_ZK. Here they are started natively by the harness's test_servers helper.
echo "==> against servers named by DISTLOCK_TEST_ETCD / DISTLOCK_TEST_ZK"
cargo build -q -p distlock-tests --bin test_servers
coproc SERVERS { exec target/debug/test_servers; }
read -r -t 90 etcd_line <&"${SERVERS[0]}" || true
read -r -t 90 zk_line <&"${SERVERS[0]}" || true
if [[ "$etcd_line" == DISTLOCK_TEST_ETCD=* && "$zk_line" == DISTLOCK_TEST_ZK=* ]]; then
  export "$etcd_line" "$zk_line"
  echo "    $etcd_line $zk_line"
  cargo test -q -p distlock-tests --all-features --test conformance_etcd --test conformance_zk --test smoke_etcd --test smoke_zk || status=$?
  cargo run -q --example quickstart --features etcd,zookeeper -- "etcd://$DISTLOCK_TEST_ETCD/quickstart" >/dev/null || status=$?
  cargo run -q --example quickstart --features etcd,zookeeper -- "zk://$DISTLOCK_TEST_ZK/quickstart" >/dev/null || status=$?
  unset DISTLOCK_TEST_ETCD DISTLOCK_TEST_ZK
else
  echo "test_servers did not start the servers"
  status=1
fi
eval "exec ${SERVERS[1]}>&-"   # closing its stdin stops the servers
wait "$SERVERS_PID" 2>/dev/null || true

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
