#!/usr/bin/env bash
# distlock's Redis backend beside the Redis locks teams use today, on one redis-server (Debian,
# no persistence) in one run, alternating, ROUNDS rounds: the floor (a bare SET NX PX + DEL, and
# as a spin lock retrying every 1 ms), the `rslock` crate (Redlock on one instance,
# bench/peers/redis_rust) and redis-py's `Lock` (bench/peers/redis_py_peer.py); W1 (one client,
# CYCLES cycles) and W2 (8 and 32 clients, each its own connection, looping acquire -> release on
# one lock for SECONDS). Prints a Markdown page with the median (and range) of each.
#
# W1 runs twice, with the client and redis-server pinned (taskset) to one core, then to two: a
# round trip between two processes on one core costs a few microseconds, between two cores it
# waits for the other core to wake (tens of microseconds on a VM), and a scheduler left alone
# switches between the two from one run to the next. Beside them in W1: two EVALSHA of a script
# that only returns, the floor of any lock that runs one script per request.
#
#   bench/peers/compare-redis.sh [ROUNDS] [SECONDS] [CYCLES] > docs/PEERS-redis.md
#
# Needs redis-server, cargo and `pip install redis`. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
seconds=${2:-5}
cycles=${3:-2000}

python3 -c "import redis" 2>/dev/null || pip install -q redis >&2
cargo build -q --release -p distlock-bench
(cd bench/peers/redis_rust && cargo build -q --release)
peers=bench/peers/redis_rust/target/release/redis-peers
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no --daemonize yes \
  --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null; rm -rf "$dir"' EXIT
redis="127.0.0.1:$port"
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
results="$dir/results"

server_pid=$(cat "$dir/redis.pid")
all_cores="0-$(($(nproc) - 1))"
placements="one:0"
[ "$(nproc)" -ge 2 ] && placements="one:0 two:1"
# Tags each JSON line read with the placement it ran in.
tagged() { python3 -c 'import json, sys; [print(json.dumps({**json.loads(l), "placement": sys.argv[1]})) for l in sys.stdin]' "$1"; }

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  # W1: redis-server on core 0, the client on core 0 (one core) or core 1 (two cores).
  taskset -pc 0 "$server_pid" >/dev/null
  for placement in $placements; do
    pin="taskset -c ${placement#*:}"
    {
      $pin target/release/distlock-bench floor w1 --backends redis --redis "$redis" --cycles "$cycles" --rounds 1 2>/dev/null
      $pin "$peers" --redis "$redis" --peer script --workload w1 --cycles "$cycles"
      $pin "$peers" --redis "$redis" --peer bare --workload w1 --cycles "$cycles"
      $pin "$peers" --redis "$redis" --peer rslock --workload w1 --cycles "$cycles"
      $pin bench/peers/redis_py_peer.py --redis "$redis" --workload w1 --cycles "$cycles"
    } | tagged "${placement%:*}" >>"$results"
  done
  taskset -pc "$all_cores" "$server_pid" >/dev/null
  for clients in 8 32; do
    target/release/distlock-bench w2 --backends redis --redis "$redis" --clients "$clients" --seconds "$seconds" \
      --pause-ms 0 2>/dev/null >>"$results"
    "$peers" --redis "$redis" --peer bare --workload w2 --clients "$clients" --seconds "$seconds" >>"$results"
    "$peers" --redis "$redis" --peer rslock --workload w2 --clients "$clients" --seconds "$seconds" >>"$results"
    bench/peers/redis_py_peer.py --redis "$redis" --workload w2 --clients "$clients" --seconds "$seconds" >>"$results"
  done
done
version=$(redis-server --version | sed 's/.*v=\([0-9.]*\).*/\1/')

python3 - "$results" "$rounds" "$seconds" "$cycles" "$version" <<'PY'
import json, statistics, sys
path, rounds, seconds, cycles, version = sys.argv[1:6]
FLOOR = "bare SET NX PX + DEL (the floor)"
w1, w2 = {}, {}
for line in open(path):
    d = json.loads(line)
    if d["workload"] == "floor":
        w1.setdefault((d["placement"], FLOOR), []).append((d["cycles_per_s"], d["server_requests_per_cycle"]))
        continue
    impl = d.get("implementation") or "distlock (fair, fenced)"
    if d["workload"].startswith("W1"):
        w1.setdefault((d["placement"], impl), []).append((d["ops_per_s"], d.get("server_requests_per_cycle")))
    else:
        w2.setdefault((d["clients"], impl), []).append(
            (d["handoffs_per_s"], d.get("fairness_max_over_min"), d["wait_p99_ms"], d.get("server_requests_per_handoff")))

def med(values, fmt="{:,.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    m = statistics.median(values)
    return fmt.format(m) + (" (" + fmt.format(min(values)) + "–" + fmt.format(max(values)) + ")" if len(values) > 1 else "")

print("# The Redis backend beside rslock and redis-py\n")
print("`bench/peers/compare-redis.sh %s %s %s`: on one redis-server %s (Debian, no persistence) started" % (rounds, seconds, cycles, version))
print("by the script, in one run, %s rounds alternating; the median, with the range. W1: one client, %s" % (rounds, cycles))
print("acquire -> release cycles. W2: each client its own connection, looping acquire -> release on")
print("one lock for %s s; max/min is the most acquisitions of one client over the fewest (1.00 is" % seconds)
print("FIFO); the wait is from asking to holding. Requests are the server's, from `INFO commandstats`\n(distlock only).\n")
print("W1 with the client and redis-server on one core, and on two (see the script's comment); the")
print("floor ratio is the floor's median rate over this row's.\n")
print("| uncontended (W1) | cores | cycles/s | floor ratio | requests per cycle |")
print("|---|---|---|---|---|")
for (placement, impl), vals in sorted(w1.items(), key=lambda kv: (kv[0][0] != "one", -statistics.median(v[0] for v in kv[1]))):
    floor = statistics.median(v[0] for v in w1[(placement, FLOOR)])
    rate = statistics.median(v[0] for v in vals)
    print("| %s | %s | %s | %.2f | %s |" % (impl, placement, med([v[0] for v in vals]), floor / rate, med([v[1] for v in vals], "{:.1f}")))
print("\n| contended (W2) | clients | hand-offs/s | max/min per client | p99 wait ms | requests per hand-off |")
print("|---|---|---|---|---|---|")
for (clients, impl), vals in sorted(w2.items(), key=lambda kv: (kv[0][0], -statistics.median(v[0] for v in kv[1]))):
    print("| %s | %d | %s | %s | %s | %s |" % (impl, clients, med([v[0] for v in vals]), med([v[1] for v in vals], "{:.2f}"),
          med([v[2] for v in vals], "{:.1f}"), med([v[3] for v in vals], "{:.1f}")))
PY
