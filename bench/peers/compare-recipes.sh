#!/usr/bin/env bash
# distlock's read-write lock and semaphore beside kazoo's (ReadLock/WriteLock, Semaphore), on the
# same ZooKeeper in the same run, alternating, ROUNDS times each (distlock on etcd too); then, once,
# the flat-cost rounds: 10 to 1,000 waiters queued behind a semaphore of 4 (distlock's S4 and
# kazoo's, kazoo to 100: a thread and a session per waiter), and distlock's read-write lock (R4).
# Prints a Markdown page with the median (and range) per implementation and workload.
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
echo "flat-cost rounds" >&2
for waiters in 10 100; do
  bench/peers/kazoo_peer.py --zk "$zk" --workload s4 --waiters "$waiters" >>"$results"
done
target/release/distlock-bench s4 r4 --etcd "$etcd" --zk "$zk" --waiters 10,100,1000 2>/dev/null >>"$results"
stop_servers

python3 - "$results" "$rounds" "$seconds" <<'PY'
import json, statistics, sys
path, rounds, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
rows, scale = {}, []
for line in open(path):
    d = json.loads(line)
    if d["workload"] in ("s4", "S4-scale", "R4-scale"):
        impl = d.get("implementation", "distlock %s" % ("semaphore" if d["workload"].startswith("S") else "read-write lock, 90% reads"))
        backend = d.get("backend", "zookeeper")
        scale.append((impl, backend, d["waiters"], d["handoff_ms"], d["server_requests_per_handoff"], d.get("watch_notifications_per_handoff")))
        continue
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
print("\n## Flat cost: waiters queued, then served one by one\n")
print("WAITERS clients queue behind the holders (a semaphore of 4: four holders; the read-write lock:")
print("a writer, each waiter a reader at 90%), then the holders release and each waiter releases as")
print("soon as it holds. A hand-off is a release and the acquisition it allows. One round each; kazoo")
print("to 100 waiters (a thread and a session each). Notifications: distlock's clients count them;")
print("kazoo's are not counted.\n")
print("| implementation | backend | waiters | ms per hand-off | server requests per hand-off | notifications per hand-off |")
print("|---|---|---|---|---|---|")
for impl, backend, waiters, ms, req, notes in sorted(scale, key=lambda r: (r[0], r[1], r[2])):
    print("| %s | %s | %s | %.2f | %.2f | %s |" % (impl, backend, waiters, ms, req, "-" if notes is None else "%.2f" % notes))
PY
