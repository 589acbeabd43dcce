#!/usr/bin/env python3
"""kazoo's recipes (ReadLock/WriteLock, Semaphore) beside distlock-bench's S1, S2, R2 and S4.

Each client is a KazooClient of its own (its own session), in a thread of its own, looping
acquire -> release on one name for SECONDS; S1 is one client's CYCLES acquisitions. S4 queues
WAITERS clients behind 4 holders of a Semaphore(4), then the holders release and each waiter
releases as soon as it holds. Prints one JSON line per run, with the server's requests from
`mntr` (zk_packets_received) per acquisition (S4: per hand-off, less the idle rate of pings).

    pip install kazoo
    bench/peers/kazoo_peer.py --zk HOST:PORT --workload s2 --clients 8 --seconds 5
"""
import argparse
import json
import random
import socket
import threading
import time
import uuid

from kazoo.client import KazooClient


def mntr(hostport):
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"mntr")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    stats = {}
    for line in data.decode().splitlines():
        parts = line.split("\t")
        if len(parts) == 2:
            stats[parts[0]] = parts[1]
    return int(stats.get("zk_packets_received", 0))


def client(hostport):
    zk = KazooClient(hosts=hostport, timeout=10)
    zk.start(timeout=10)
    return zk


def take(zk, path, workload, read_percent, rng):
    if workload == "r2":
        if rng.randrange(100) < read_percent:
            return zk.ReadLock(path, identifier="bench")
        return zk.WriteLock(path, identifier="bench")
    return zk.Semaphore(path, identifier="bench", max_leases=4)


def quiet(hostport, gap=0.3):
    """Waits until the server has received nothing new for `gap` seconds (pings aside, which
    idle sessions send every few seconds); returns its packet count."""
    last = mntr(hostport)
    while True:
        time.sleep(gap)
        now = mntr(hostport)
        if now - last <= 1:
            return now
        last = now


def scale(args):
    path = "/kazoo-bench/s4-%s" % uuid.uuid4().hex
    holders = [client(args.zk) for _ in range(4)]
    waiters = [client(args.zk) for _ in range(args.waiters)]
    held = [zk.Semaphore(path, identifier="bench", max_leases=4) for zk in holders]
    for semaphore in held:
        semaphore.acquire()
    # The idle rate (pings) over one second, to take out of the count.
    start = mntr(args.zk)
    time.sleep(1)
    idle = mntr(args.zk) - start
    acquired, lock = [], threading.Lock()
    everyone = threading.Event()
    last_may_release = threading.Event()

    def wait(zk):
        semaphore = zk.Semaphore(path, identifier="bench", max_leases=4)
        semaphore.acquire()
        with lock:
            acquired.append(time.monotonic())
            last = len(acquired) == len(waiters)
        if last:
            everyone.set()
            last_may_release.wait()
        semaphore.release()

    threads = [threading.Thread(target=wait, args=(zk,)) for zk in waiters]
    for t in threads:
        t.start()
    before = quiet(args.zk)
    released = time.monotonic()
    for semaphore in held:
        semaphore.release()
    everyone.wait(timeout=300)
    elapsed = time.monotonic() - released
    requests = mntr(args.zk) - before - idle * elapsed
    last_may_release.set()
    for t in threads:
        t.join()
    for zk in holders + waiters:
        zk.stop()
        zk.close()
    n = len(waiters)
    print(json.dumps({
        "implementation": "kazoo Semaphore(4)",
        "workload": "s4",
        "waiters": n,
        "handoff_ms": round(elapsed * 1000 / n, 2),
        "server_requests_per_handoff": round(requests / n, 2),
    }), flush=True)


def run(args):
    if args.workload == "s4":
        return scale(args)
    path = "/kazoo-bench/%s-%s" % (args.workload, uuid.uuid4().hex)
    clients = [client(args.zk) for _ in range(1 if args.workload == "s1" else args.clients)]
    waits, counts = [], [0] * len(clients)
    lock = threading.Lock()
    stop = threading.Event()

    def loop(i, zk):
        rng = random.Random(i)
        recipe = take(zk, path, args.workload, args.read_percent, rng)
        n = 0
        while not stop.is_set() and (args.workload != "s1" or n < args.cycles):
            if args.workload == "r2":
                recipe = take(zk, path, args.workload, args.read_percent, rng)
            t = time.monotonic()
            recipe.acquire()
            w = time.monotonic() - t
            recipe.release()
            n += 1
            with lock:
                waits.append(w)
                counts[i] += 1

    # One cycle first, so that the name's nodes exist, as for distlock-bench.
    take(clients[0], path, args.workload, args.read_percent, random.Random(0)).acquire()
    clients[0].stop()
    clients[0] = client(args.zk)
    before = mntr(args.zk)
    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i, zk)) for i, zk in enumerate(clients)]
    for t in threads:
        t.start()
    if args.workload != "s1":
        time.sleep(args.seconds)
        stop.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    requests = mntr(args.zk) - before
    for zk in clients:
        zk.stop()
        zk.close()
    total = sum(counts)
    waits.sort()
    p = lambda q: round(waits[min(len(waits) - 1, int(len(waits) * q))] * 1000, 2) if waits else None
    line = {
        "implementation": "kazoo %s" % ("ReadLock/WriteLock" if args.workload == "r2" else "Semaphore(4)"),
        "workload": args.workload,
        "clients": len(clients),
        "acquisitions": total,
        "ops_per_s": round(total / elapsed, 1),
        "wait_p50_ms": p(0.5),
        "wait_p99_ms": p(0.99),
        "server_requests_per_acquisition": round(requests / total, 2) if total else None,
    }
    if args.workload == "r2":
        line["read_percent"] = args.read_percent
    print(json.dumps(line), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zk", required=True)
    parser.add_argument("--workload", choices=["s1", "s2", "r2", "s4"], required=True)
    parser.add_argument("--waiters", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--read-percent", type=int, default=90)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
