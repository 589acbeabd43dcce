#!/usr/bin/env bash
# distlock's read-write lock and semaphore beside kazoo's (ReadLock/WriteLock, Semaphore), on the
# same ZooKeeper in the same run, alternating, ROUNDS times each (distlock on etcd too); prints a
# Markdown page with the median (and range) per implementation and workload.
#
#   bench/peers/compare-recipes.sh [ROUNDS] [SECONDS] > docs/PEERS-recipes.md
#
# Needs kazoo (`pip install kazoo`) and the ZooKeeper 4lw command `mntr` (the harness's servers
# allow it). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
seconds=${2:-5}

python3 -c "import kazoo" 2>/dev/null || pip install -q kazoo >&2
# shellcheck source=bench/peers/servers.sh
source bench/peers/servers.sh

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  bench/peers/kazoo_peer.py --zk "$zk" --workload s1 --cycles 500 >>"$results"
  target/release/distlock-bench s1 --etcd "$etcd" --zk "$zk" --cycles 500 2>/dev/null >>"$results"
  for clients in 8 32; do
    bench/peers/kazoo_peer.py --zk "$zk" --workload s2 --clients "$clients" --seconds "$seconds" >>"$results"
    for percent in 90 50; do
      bench/peers/kazoo_peer.py --zk "$zk" --workload r2 --read-percent "$percent" --clients "$clients" \
        --seconds "$seconds" >>"$results"
    done
  done
  target/release/distlock-bench s2 r2 --etcd "$etcd" --zk "$zk" --clients 8,32 --seconds "$seconds" 2>/dev/null >>"$results"
done
stop_servers

python3 - "$results" "$rounds" "$seconds" <<'PY'
import json, statistics, sys
path, rounds, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
rows = {}
for line in open(path):
    d = json.loads(line)
    if "implementation" in d:  # kazoo
        impl = d["implementation"] + " (ZooKeeper)"
        w = {"s1": "uncontended, 4 permits", "s2": "contended, 4 permits", "r2": "read-write, %s%% reads" % d.get("read_percent")}[d["workload"]]
        rate, req = d["ops_per_s"], d["server_requests_per_acquisition"]
    else:
        recipe = d.get("recipe") or {}
        kind = "semaphore" if d["workload"].startswith("S") else "read-write lock"
        impl = "distlock %s (%s)" % (kind, d["backend"])
        if d["workload"].startswith("S1"):
            w, rate, req = "uncontended, 4 permits", d["ops_per_s"], d["server_requests_per_cycle"]
        elif d["workload"].startswith("S2"):
            w, rate, req = "contended, 4 permits", d["handoffs_per_s"], d["server_requests_per_handoff"]
        else:
            w, rate, req = "read-write, %s%% reads" % recipe.get("read_percent"), d["handoffs_per_s"], d["server_requests_per_handoff"]
    clients = d.get("clients", 1)
    rows.setdefault((w, clients, impl), []).append((rate, req, d.get("wait_p50_ms") or d.get("acquire_p50_ms")))
print("# The read-write lock and the semaphore beside kazoo's\n")
print("`bench/peers/compare-recipes.sh %s %s`: distlock-bench's S1 (one client, 500 cycles), S2 and R2" % (rounds, seconds))
print("(each client its own session, looping acquire -> release on one name for %s s) beside kazoo's" % seconds)
print("`Semaphore(max_leases=4)`, `ReadLock` and `WriteLock` doing the same, on one ZooKeeper started by")
print("the harness, in one run, %s rounds alternating; the median, with the range. Requests are the" % rounds)
print("server's: distlock's from its request counters, kazoo's from ZooKeeper's `mntr`")
print("(`zk_packets_received`), per acquisition.\n")
print("| workload | clients | implementation | acquisitions/s | median wait ms | server requests per acquisition |")
print("|---|---|---|---|---|---|")
for (w, clients, impl), vals in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
    rates = [v[0] for v in vals]
    reqs = [v[1] for v in vals if v[1] is not None]
    waits = [v[2] for v in vals if v[2] is not None]
    rng = "%s-%s" % (round(min(rates)), round(max(rates))) if len(rates) > 1 else ""
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    rate = "%s (%s)" % (round(med(rates)), rng) if rng else str(round(med(rates)))
    print("| %s | %s | %s | %s | %.2f | %.2f |" % (w, clients, impl, rate, med(waits), med(reqs)))
PY
