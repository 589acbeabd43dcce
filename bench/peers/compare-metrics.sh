#!/usr/bin/env bash
# The cost of metrics: W1 (uncontended) and W2 (contended, 8 and 32 clients) with this commit's
# bench without a recorder, with one installed (--recorder), and with the bench of a commit
# before metrics, on the same servers, alternating, ROUNDS times each; prints a Markdown table
# of the medians (and ranges).
#
#   git worktree add /tmp/prev REV && (cd /tmp/prev && CARGO_TARGET_DIR=/tmp/prev-target \
#     cargo build --release -p distlock-bench)
#   bench/peers/compare-metrics.sh /tmp/prev-target/release/distlock-bench [ROUNDS] [SECONDS]
#
# Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
previous=$1
rounds=${2:-3}
seconds=${3:-3}
# shellcheck source=bench/peers/servers.sh
source bench/peers/servers.sh

variant() { # LABEL BENCH [FLAGS...]: W1 and W2 on both backends, each line labelled
  local label=$1 bench=$2
  shift 2
  {
    "$bench" w1 --etcd "$etcd" --zk "$zk" --cycles 2000 "$@" 2>/dev/null
    for clients in 8 32; do
      "$bench" w2 --etcd "$etcd" --zk "$zk" --clients "$clients" --pause-ms 0 --seconds "$seconds" "$@" 2>/dev/null
    done
  } | python3 -c 'import json, sys
for line in sys.stdin:
    d = json.loads(line); d["variant"] = sys.argv[1]; print(json.dumps(d))' "$label" >>"$results"
}

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  variant "before metrics" "$previous"
  variant "no recorder" target/release/distlock-bench
  variant "recorder installed" target/release/distlock-bench --recorder
done
stop_servers

python3 - "$results" "$rounds" "$seconds" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["workload"].startswith("W1"):
        figures = [("W1 cycles/s", d.get("ops_per_s")), ("W1 client CPU µs/cycle", d.get("client_cpu_us_per_op"))]
    elif d["workload"].startswith("W2"):
        figures = [("W2 %d clients hand-offs/s" % d["clients"], d["handoffs_per_s"]),
                   ("W2 %d clients client CPU µs/hand-off" % d["clients"], d.get("client_cpu_us_per_handoff"))]
    else:
        continue
    for figure, value in figures:
        if value is not None:
            runs[((d["backend"], figure), d["variant"])].append(value)
variants = ["before metrics", "no recorder", "recorder installed"]
print("%s rounds, W2 %s s each, alternating, one etcd and one ZooKeeper. Medians (range). Client CPU"
      " is what metrics could add to: the servers' work is the same.\n" % (sys.argv[2], sys.argv[3]))
print("| backend | figure | " + " | ".join(variants) + " |")
print("|---|---|" + "---|" * len(variants))
for key in sorted({k for k, _ in runs}):
    cells = []
    for v in variants:
        xs = runs.get((key, v), [])
        cells.append("%.0f (%.0f–%.0f)" % (statistics.median(xs), min(xs), max(xs)) if xs else "-")
    print("| %s | %s | %s |" % (key[0], key[1], " | ".join(cells)))
PY
