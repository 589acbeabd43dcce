#!/usr/bin/env python3
"""redis-py's Lock beside distlock-bench's W1 and W2 on Redis, one JSON line per run.

Each client is a redis.Redis of its own (its own connection), in a thread of its own, looping
acquire -> release on one lock: W1 is one client's CYCLES cycles, W2 CLIENTS clients for
SECONDS. The lock is redis-py's default (`SET NX PX` polled every `sleep` = 10 ms by default,
released by a Lua script that checks the token).

    pip install redis
    bench/peers/redis_py_peer.py --redis HOST:PORT --workload w2 --clients 8 --seconds 5
"""
import argparse
import json
import threading
import time
import uuid

import redis


def connect(hostport):
    host, port = hostport.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port))


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    return sorted_values[round(p / 100.0 * (len(sorted_values) - 1))] * 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--workload", choices=["w1", "w2"], required=True)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    name = "peer-redis-py-%s" % uuid.uuid4().hex
    label = "redis-py %s Lock (10 ms poll)" % redis.__version__
    if args.workload == "w1":
        r = connect(args.redis)
        lock = r.lock(name, timeout=30)
        started = time.perf_counter()
        for _ in range(args.cycles):
            lock.acquire()
            lock.release()
        rate = args.cycles / (time.perf_counter() - started)
        print(json.dumps({"implementation": label, "workload": "W1-uncontended", "cycles": args.cycles, "ops_per_s": round(rate)}))
        return
    stop = threading.Event()
    results = [[] for _ in range(args.clients)]

    def worker(i):
        lock = connect(args.redis).lock(name, timeout=30)
        while not stop.is_set():
            t = time.perf_counter()
            lock.acquire()
            results[i].append(time.perf_counter() - t)
            lock.release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    waits = sorted(w for r in results for w in r)
    counts = [len(r) for r in results]
    print(json.dumps({
        "implementation": label, "workload": "W2-contended", "clients": args.clients, "seconds": args.seconds,
        "acquisitions": len(waits), "handoffs_per_s": round(len(waits) / elapsed),
        "fairness_max_over_min": round(max(counts) / min(counts), 2) if min(counts) else None,
        "wait_p50_ms": round(percentile(waits, 50), 2), "wait_p99_ms": round(percentile(waits, 99), 2),
    }))


if __name__ == "__main__":
    main()
