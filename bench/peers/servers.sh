# Sourced by the comparison scripts: builds distlock-bench and the harness's test_servers, starts
# one etcd and one ZooKeeper as deployed (full JIT compilation) under test_servers, sets $etcd and
# $zk to their addresses, warms them up under load (not measured), and gives $results, a temp
# file removed on exit. `stop_servers` stops them (closing test_servers' input).
cargo build -q --release -p distlock-bench
cargo build -q -p distlock-tests --bin test_servers
coproc SERVERS { exec target/debug/test_servers --as-deployed; }
read -r -t 90 etcd_line <&"${SERVERS[0]}"
read -r -t 90 zk_line <&"${SERVERS[0]}"
etcd=${etcd_line#DISTLOCK_TEST_ETCD=}
zk=${zk_line#DISTLOCK_TEST_ZK=}
target/release/distlock-bench w2 --etcd "$etcd" --zk "$zk" --clients 8 --seconds 1 --warmup 10 >/dev/null 2>&1
results=$(mktemp)
trap 'rm -f "$results"' EXIT

stop_servers() {
  eval "exec ${SERVERS[1]}>&-"   # closing its stdin stops the servers
  wait "$SERVERS_PID" 2>/dev/null || true
}
