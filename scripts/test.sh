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
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${missing[@]}"
fi

leftovers() {
  # Servers the harness started run with data in a distlock-test-* temp dir.
  pgrep -af 'distlock-test-' | grep -E 'etcd|java' || true
}

started=$(date +%s)
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "==> cargo test"
status=0
cargo test --workspace --all-features || status=$?
echo "==> quickstart (mem://, no server)"
cargo run -q --example quickstart >/dev/null || status=$?

left=$(leftovers)
if [ -n "$left" ]; then
  echo "==> server processes were left running by the tests:"
  echo "$left"
  pkill -9 -f 'distlock-test-' || true
  status=1
fi
echo "==> done in $(( $(date +%s) - started ))s, exit $status"
exit $status
