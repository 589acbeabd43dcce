//! ZooKeeper request counts from the server's own `mntr` packet counter.

use std::sync::Arc;
use std::time::Duration;

use distlock_core::DistributedLock;
use distlock_tests::zk::four_letter;
use distlock_tests::ZkEnsemble;
use distlock_zk::{ZkBackend, ZkLocks};
use tokio::time::Instant;

async fn packets(endpoint: &str) -> f64 {
    let mntr = four_letter(endpoint, "mntr").await.expect("mntr");
    mntr.lines()
        .find_map(|l| l.strip_prefix("zk_packets_received"))
        .and_then(|v| v.trim().parse().ok())
        .expect("zk_packets_received in mntr")
}

async fn client(hosts: &[String], chroot: &str) -> ZkLocks {
    ZkBackend::builder()
        .hosts(hosts.iter().cloned())
        .chroot(chroot)
        .session_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("a ZooKeeper client")
}

/// Packets per second while the clients are idle (pings and the lease-clock probes).
async fn idle_rate(endpoint: &str) -> f64 {
    let before = packets(endpoint).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Each mntr is one more packet.
    (packets(endpoint).await - before - 1.0).max(0.0) / 2.0
}

pub async fn requests(cycles: usize, waiters: &[usize]) {
    let ensemble = ZkEnsemble::start(1).await.expect("a standalone ZooKeeper");
    let hosts = ensemble.endpoints();
    let endpoint = hosts[0].clone();

    let locks = client(&hosts, "/bench-uncontended").await;
    // Create the lock directory once, as any long-lived lock has it.
    locks.lock("w1").await.expect("lock").release().await.expect("release");
    let idle = idle_rate(&endpoint).await;
    let before = packets(&endpoint).await;
    let started = Instant::now();
    for _ in 0..cycles {
        locks.lock("w1").await.expect("lock").release().await.expect("release");
    }
    let elapsed = started.elapsed();
    let spent = packets(&endpoint).await - before - 1.0 - idle * elapsed.as_secs_f64();
    println!(
        "{{\"workload\":\"zk-uncontended\",\"cycles\":{cycles},\"cycles_per_s\":{:.0},\"server_requests_per_cycle\":{:.2}}}",
        cycles as f64 / elapsed.as_secs_f64(),
        spent / cycles as f64,
    );

    for &n in waiters {
        let chroot = format!("/bench-handoff-{n}");
        let holder = client(&hosts, &chroot).await;
        holder.lock("w4").await.expect("lock").release().await.expect("release");
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(Arc::new(client(&hosts, &chroot).await));
        }
        let idle = idle_rate(&endpoint).await;
        let counted_before: u64 = clients.iter().map(|c| c.backend().requests()).sum();
        let before = packets(&endpoint).await;
        let started = Instant::now();
        let guard = holder.lock("w4").await.expect("holder lock");
        let mut tasks = Vec::new();
        for c in &clients {
            let c = c.clone();
            tasks
                .push(tokio::spawn(async move { c.lock("w4").await.expect("lock").release().await.expect("release") }));
        }
        // Let every waiter queue (watching the backend's own counter, not the server).
        while clients.iter().map(|c| c.backend().requests()).sum::<u64>() < counted_before + 3 * n as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let handoffs_from = Instant::now();
        guard.release().await.expect("holder release");
        for t in tasks {
            t.await.expect("waiter");
        }
        let handoff_time = handoffs_from.elapsed();
        let elapsed = started.elapsed();
        let spent = packets(&endpoint).await - before - 1.0 - idle * elapsed.as_secs_f64();
        let counted: u64 = clients.iter().map(|c| c.backend().requests()).sum::<u64>() - counted_before;
        println!(
            "{{\"workload\":\"zk-handoff\",\"waiters\":{n},\"server_requests_per_acquisition\":{:.2},\"client_counted_requests_per_acquisition\":{:.2},\"handoffs_per_s\":{:.0},\"idle_packets_per_s\":{idle:.1}}}",
            (spent - 3.0) / n as f64,
            counted as f64 / n as f64,
            n as f64 / handoff_time.as_secs_f64(),
        );
        drop(clients);
    }
}
