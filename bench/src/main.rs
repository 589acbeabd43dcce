//! distlock benchmarks. Each workload prints one JSON line.
//!
//! ```text
//! cargo run --release -p distlock-bench -- etcd-requests [--cycles M] [--waiters 2,100,1000]
//! cargo run --release -p distlock-bench -- zk-requests   [--cycles M] [--waiters 2,100,1000]
//! ```
//!
//! `etcd-requests` starts its own single-node etcd (through the test harness) and reads etcd's
//! own `/metrics` counters: requests for one uncontended acquire+release, and requests per
//! acquisition with N waiters queued on one lock. `zk-requests` does the same on a standalone
//! ZooKeeper from `mntr`'s `zk_packets_received`, less the idle rate of session pings and probes
//! measured just before.

mod metrics;
mod zk;

use std::sync::Arc;
use std::time::Duration;

use distlock_core::DistributedLock;
use distlock_etcd::{EtcdBackend, EtcdLocks};
use distlock_tests::EtcdCluster;
use metrics::EtcdRequests;
use tokio::time::Instant;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// `--cycles M` (default 500).
fn cycles_arg() -> usize {
    arg("--cycles").and_then(|c| c.parse().ok()).unwrap_or(500)
}

/// `--waiters 2,100,1000` (the default).
fn waiters_arg() -> Vec<usize> {
    arg("--waiters").unwrap_or_else(|| "2,100,1000".into()).split(',').filter_map(|w| w.trim().parse().ok()).collect()
}

async fn client(endpoints: &[String], prefix: &str) -> EtcdLocks {
    EtcdBackend::builder()
        .endpoints(endpoints.iter().cloned())
        .prefix(prefix)
        .ttl(Duration::from_secs(10))
        .connect()
        .await
        .expect("an etcd client")
}

/// W1 in requests: one client, M acquire+release cycles on one lock.
async fn uncontended(endpoints: &[String], cycles: usize) {
    let locks = client(endpoints, "bench-uncontended").await;
    let before = EtcdRequests::read(&endpoints[0]).await.expect("metrics");
    let started = Instant::now();
    for _ in 0..cycles {
        let guard = locks.lock("w1").await.expect("lock");
        guard.release().await.expect("release");
    }
    let elapsed = started.elapsed();
    let after = EtcdRequests::read(&endpoints[0]).await.expect("metrics");
    println!(
        "{{\"workload\":\"etcd-uncontended\",\"cycles\":{cycles},\"cycles_per_s\":{:.0},\"server_requests_per_cycle\":{:.2},\"by_method\":{:?}}}",
        cycles as f64 / elapsed.as_secs_f64(),
        after.lock_requests_since(&before) / cycles as f64,
        after.by_method_since(&before),
    );
}

/// Requests per acquisition with `waiters` clients queued behind a holder; each releases as soon
/// as it holds. Counted from before the waiters queue to after the last release.
async fn per_handoff(endpoints: &[String], waiters: usize) {
    let prefix = format!("bench-handoff-{waiters}");
    let holder = client(endpoints, &prefix).await;
    let mut clients = Vec::new();
    for _ in 0..waiters {
        clients.push(Arc::new(client(endpoints, &prefix).await));
    }
    let before = EtcdRequests::read(&endpoints[0]).await.expect("metrics");
    let guard = holder.lock("w4").await.expect("holder lock");
    let mut tasks = Vec::new();
    for c in &clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let g = c.lock("w4").await.expect("waiter lock");
            g.release().await.expect("waiter release");
        }));
    }
    // Let every waiter queue before the first hand-off.
    while holder.inspect("w4").await.expect("inspect").waiters.len() < waiters {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = EtcdRequests::read(&endpoints[0]).await.expect("metrics");
    let started = Instant::now();
    guard.release().await.expect("holder release");
    for t in tasks {
        t.await.expect("waiter");
    }
    let elapsed = started.elapsed();
    let after = EtcdRequests::read(&endpoints[0]).await.expect("metrics");
    let n = waiters as f64;
    // The inspect polls above are the bench's own reads, not the lock's: leave them out.
    let polls =
        queued.started.get("Range").copied().unwrap_or(0.0) - before.started.get("Range").copied().unwrap_or(0.0);
    println!(
        "{{\"workload\":\"etcd-handoff\",\"waiters\":{waiters},\"server_requests_per_acquisition\":{:.2},\"server_requests_per_handoff_after_queuing\":{:.2},\"handoffs_per_s\":{:.0},\"by_method_after_queuing\":{:?}}}",
        (after.lock_requests_since(&before) - polls - 2.0) / n,
        (after.lock_requests_since(&queued) - 1.0) / n,
        n / elapsed.as_secs_f64(),
        after.by_method_since(&queued),
    );
    drop(clients);
}

#[tokio::main]
async fn main() {
    let workload = std::env::args().nth(1).unwrap_or_else(|| "etcd-requests".into());
    match workload.as_str() {
        "etcd-requests" => {
            let (cycles, waiters) = (cycles_arg(), waiters_arg());
            let cluster = EtcdCluster::start(1).await.expect("a single-node etcd");
            let endpoints = cluster.endpoints();
            uncontended(&endpoints, cycles).await;
            for n in waiters {
                per_handoff(&endpoints, n).await;
            }
        }
        "zk-requests" => {
            let (cycles, waiters) = (cycles_arg(), waiters_arg());
            zk::requests(cycles, &waiters).await;
        }
        other => {
            eprintln!("unknown workload {other:?}; known: etcd-requests, zk-requests");
            std::process::exit(64);
        }
    }
}
