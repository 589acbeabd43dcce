#!/usr/bin/env bash
# distlock beside the peers' recipes, on the same servers, alternating, ROUNDS times each; prints
# a Markdown page with the median (and range) per implementation and workload.
#
#   bench/peers/compare.sh [ROUNDS] [SECONDS] > docs/PEERS.md
#
# Needs Debian's Go and the peers' packages (bench/peers/README.md). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
seconds=${2:-5}

GO111MODULE=off GOPATH=/usr/share/gocode go build -o target/peers bench/peers/main.go
# shellcheck source=bench/peers/servers.sh
source bench/peers/servers.sh

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  target/peers -etcd "$etcd" -zk "$zk" -workload w1 -cycles 2000 >>"$results"
  target/release/distlock-bench floor w1 --etcd "$etcd" --zk "$zk" --cycles 2000 2>/dev/null >>"$results"
  for clients in 2 8 32; do
    target/peers -etcd "$etcd" -zk "$zk" -workload w2 -clients "$clients" -seconds "$seconds" >>"$results"
    target/release/distlock-bench w2 --etcd "$etcd" --zk "$zk" --clients "$clients" --pause-ms 0 --seconds "$seconds" \
      2>/dev/null >>"$results"
  done
  # Leader election (etcd's Go concurrency.Election: Campaign, Resign) and independent locks.
  target/peers -etcd "$etcd" -recipe election -workload w1 -cycles 2000 >>"$results"
  target/release/distlock-bench e1 --backends etcd --etcd "$etcd" --cycles 2000 2>/dev/null >>"$results"
  for clients in 2 8 32; do
    target/peers -etcd "$etcd" -recipe election -workload w2 -clients "$clients" -seconds "$seconds" >>"$results"
    target/release/distlock-bench e2 --backends etcd --etcd "$etcd" --clients "$clients" --seconds "$seconds" \
      2>/dev/null >>"$results"
  done
  for clients in 8 32; do
    target/peers -etcd "$etcd" -workload w3 -clients "$clients" -seconds "$seconds" >>"$results"
    target/release/distlock-bench w3 --backends etcd --etcd "$etcd" --clients "$clients" --seconds "$seconds" \
      2>/dev/null >>"$results"
  done
done
stop_servers

machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
versions="$(etcd --version | head -1), ZooKeeper $(basename /usr/share/java/zookeeper-3*.jar .jar | cut -d- -f2), $(go version | cut -d' ' -f3)"
python3 - "$results" "$rounds" "$seconds" "$machine" "$versions" <<'EOF'
import json, statistics, sys, datetime
from collections import defaultdict

runs = defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    who = d.get("implementation") or "distlock " + d["backend"]
    election = d["workload"].startswith("E") or "Election" in who
    if election:
        who += " (election)"
    if d["workload"] in ("w3", "W3-independent"):
        runs[(who, "W3 %d clients" % d["clients"])].append((d["ops_per_s"], d["acquire_p50_ms"], d["acquire_p99_ms"], None))
    elif d["workload"] in ("w1", "W1-uncontended", "E1-uncontended"):
        runs[(who, "W1")].append((d.get("cycles_per_s") or d.get("ops_per_s"), d["acquire_p50_ms"], d["acquire_p99_ms"], None))
    elif d["workload"] == "floor":
        runs[("raw floor " + d["backend"], "W1")].append((d["cycles_per_s"], None, None, None))
    else:
        fair = d.get("max_min_acquisitions") or d.get("fairness_max_over_min")
        runs[(who, "W2 %d clients" % d["clients"])].append((d["handoffs_per_s"], d["wait_p50_ms"], d["wait_p99_ms"], fair))

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def fmt(v, digits):
    return "" if v is None else f"{v:,.{digits}f}"

rounds, seconds, machine, versions = sys.argv[2:6]
print("# distlock beside the peers, measured in one run\n")
print(f"Written by `bench/peers/compare.sh {rounds} {seconds}` on {datetime.date.today()}: {machine}; {versions}.")
print("One single-node etcd and one standalone ZooKeeper (fsync on, its JVM as deployed: full")
print("compilation) serve every run, after 10 s of unmeasured contention. Each round runs")
print("W1 (one client, 2,000 acquire+release cycles), W2 (2, 8 and 32 clients looping on one lock,")
print(f"{seconds} s each) and W3 (8 and 32 clients, each on its own lock) for the peers' own recipes")
print("(`bench/peers/main.go`: etcd's Go `concurrency.Mutex`, go-zookeeper's `zk.Lock`; for the rows marked")
print("election, etcd's Go `concurrency.Election` with Campaign for acquire and Resign for release, beside")
print("distlock's `campaign` and `resign`) and then for distlock (`distlock-bench`), so that a slow minute of the")
print("machine hits both. The raw floor is a bare put+delete (etcd) or create+delete (ZooKeeper) by")
print("distlock-bench's Rust clients. Rates are medians over the rounds with the range; latencies are")
print("medians of the per-run p50 and p99 (acquire latency for W1, wait for W2).\n")
print("| workload | implementation | runs | per s (median, min–max) | p50 ms | p99 ms | max/min |")
print("|---|---|---|---|---|---|---|")
for (who, workload) in sorted(runs, key=lambda k: (k[1], k[0])):
    r = runs[(who, workload)]
    rates = [x[0] for x in r]
    print(f"| {workload} | {who} | {len(r)} | {fmt(med(rates), 0)} ({fmt(min(rates), 0)}–{fmt(max(rates), 0)}) "
          f"| {fmt(med([x[1] for x in r]), 2)} | {fmt(med([x[2] for x in r]), 2)} | {fmt(med([x[3] for x in r]), 2)} |")

# Each round ran Go's Mutex and then distlock back to back: their ratio per round is the
# comparison least moved by the machine's drift from minute to minute.
print("\n## distlock ÷ Go's Mutex, round by round\n")
print("| workload | each round | median |")
print("|---|---|---|")
for workload in ["W1", "W2 2 clients", "W2 8 clients", "W2 32 clients", "W3 8 clients", "W3 32 clients"]:
    ours, theirs = runs.get(("distlock etcd", workload)), runs.get(("etcd concurrency.Mutex", workload))
    if ours and theirs:
        ratios = [a[0] / b[0] for a, b in zip(ours, theirs)]
        print(f"| {workload} | {', '.join(f'{x:.2f}' for x in ratios)} | {med(ratios):.2f} |")
EOF
