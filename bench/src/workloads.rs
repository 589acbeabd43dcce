//! The workloads W1 to W5 of issue 7, each generic over the backend, each returning one JSON
//! object (printed as one line by `main`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distlock_core::LockGuard;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::stats::{own_cpu, own_rss_bytes, Latencies};
use crate::target::{BenchClient, Floor, Kind, Target};

type Result<T> = std::io::Result<T>;

fn lock_error(e: distlock_core::LockError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn micros(d: Duration, per: f64) -> f64 {
    if per > 0.0 {
        (d.as_secs_f64() * 1e6 / per * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Counts by method, divided by `n`.
fn per(by_method: &std::collections::BTreeMap<String, f64>, n: f64) -> Value {
    by_method.iter().map(|(m, v)| (m.clone(), json!(round2(v / n)))).collect::<serde_json::Map<_, _>>().into()
}

/// The raw floor as its own line.
pub async fn floor(target: &Target, cycles: usize) -> Result<(Floor, Value)> {
    let before = target.snapshot().await?;
    let floor = target.raw_floor(cycles).await?;
    let server_cpu = target.snapshot().await?.since(&before).server_cpu;
    let what = match target.kind {
        Kind::Etcd => "bare put + delete of one key",
        Kind::Zk => "bare create + delete of one znode",
    };
    let line = json!({
        "workload": "floor", "backend": target.kind.label(), "what": what, "cycles": cycles,
        "cycles_per_s": floor.cycles_per_s.round(), "cycle_p50_ms": round2(floor.cycle_p50_ms),
        "server_requests_per_cycle": 2, "client_cpu_us_per_cycle": round2(floor.client_cpu_us_per_cycle),
        "server_cpu_us_per_cycle": server_cpu.map(|c| micros(c, cycles as f64)),
    });
    Ok((floor, line))
}

/// W1: one client acquires and releases one lock `cycles` times.
pub async fn uncontended(target: &Target, cycles: usize, floor: &Floor) -> Result<Value> {
    let client = target.client("bench-w1").await?;
    // The first cycle makes what a long-lived lock has (ZooKeeper's lock directory).
    client.locks.lock("w1").await.map_err(lock_error)?.release().await.map_err(lock_error)?;
    let idle = target.idle_requests_per_s().await?;
    let (mut acquire, mut release) = (Latencies::default(), Latencies::default());
    let counted = client.requests();
    let before = target.snapshot().await?;
    let cpu = own_cpu();
    let started = Instant::now();
    for _ in 0..cycles {
        let t = Instant::now();
        let guard = client.locks.lock("w1").await.map_err(lock_error)?;
        let t2 = Instant::now();
        acquire.push(t2 - t);
        guard.release().await.map_err(lock_error)?;
        release.push(t2.elapsed());
    }
    let elapsed = started.elapsed();
    let cpu = own_cpu() - cpu;
    let d = target.snapshot().await?.since(&before);
    let n = cycles as f64;
    let ops = n / elapsed.as_secs_f64();
    Ok(json!({
        "workload": "W1-uncontended", "backend": target.kind.label(), "cycles": cycles,
        "ops_per_s": ops.round(),
        "acquire_p50_ms": round2(acquire.percentile_ms(50.0)), "acquire_p99_ms": round2(acquire.percentile_ms(99.0)),
        "release_p50_ms": round2(release.percentile_ms(50.0)), "release_p99_ms": round2(release.percentile_ms(99.0)),
        "server_requests_per_cycle": round2(target.lock_requests(&d, idle) / n),
        "client_requests_per_cycle": round2((client.requests() - counted) as f64 / n),
        "by_method_per_cycle": per(&d.by_method, n),
        "floor_cycles_per_s": floor.cycles_per_s.round(),
        "floor_ratio": round2(floor.cycles_per_s / ops),
        "client_cpu_us_per_op": micros(cpu, n),
        "server_cpu_us_per_op": d.server_cpu.map(|c| micros(c, n)),
    }))
}

/// Acquisitions and waits of one looping client.
#[derive(Default)]
struct Loop {
    acquisitions: u64,
    waits: Latencies,
}

/// Each client loops acquire → release on `name_of(i)` until `stop`.
async fn run_loops(
    clients: &[Arc<BenchClient>],
    name_of: impl Fn(usize) -> String,
    duration: Duration,
) -> Result<(Vec<Loop>, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let (c, stop, name) = (c.clone(), stop.clone(), name_of(i));
        tasks.push(tokio::spawn(async move {
            let mut out = Loop::default();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let guard = c.locks.lock(&name).await.map_err(lock_error)?;
                out.waits.push(t.elapsed());
                out.acquisitions += 1;
                guard.release().await.map_err(lock_error)?;
            }
            Ok::<_, std::io::Error>(out)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut loops = Vec::new();
    for t in tasks {
        loops.push(t.await.map_err(std::io::Error::other)??);
    }
    Ok((loops, started.elapsed()))
}

/// W2: `n` clients, each its own session, loop acquire → release on one lock.
pub async fn contended(target: &Target, n: usize, duration: Duration) -> Result<Value> {
    let space = format!("bench-w2-{n}");
    let clients = target.clients(&space, n).await?;
    clients[0].locks.lock("w2").await.map_err(lock_error)?.release().await.map_err(lock_error)?;
    let idle = target.idle_requests_per_s().await?;
    let counted = BenchClient::requests_of(&clients);
    let before = target.snapshot().await?;
    let cpu = own_cpu();
    let (loops, elapsed) = run_loops(&clients, |_| "w2".to_owned(), duration).await?;
    let cpu = own_cpu() - cpu;
    let d = target.snapshot().await?.since(&before);
    let total: u64 = loops.iter().map(|l| l.acquisitions).sum();
    let (max, min) = (
        loops.iter().map(|l| l.acquisitions).max().unwrap_or(0),
        loops.iter().map(|l| l.acquisitions).min().unwrap_or(0),
    );
    let mut waits = Latencies::default();
    for l in loops {
        waits.extend(l.waits);
    }
    let t = total as f64;
    Ok(json!({
        "workload": "W2-contended", "backend": target.kind.label(), "clients": n,
        "seconds": round2(elapsed.as_secs_f64()), "acquisitions": total,
        "handoffs_per_s": (t / elapsed.as_secs_f64()).round(),
        "wait_p50_ms": round2(waits.percentile_ms(50.0)), "wait_p99_ms": round2(waits.percentile_ms(99.0)),
        "acquisitions_per_client_max": max, "acquisitions_per_client_min": min,
        "fairness_max_over_min": if min > 0 { round2(max as f64 / min as f64) } else { f64::INFINITY },
        "server_requests_per_handoff": round2(target.lock_requests(&d, idle) / t),
        "client_requests_per_handoff": round2((BenchClient::requests_of(&clients) - counted) as f64 / t),
        "by_method_per_handoff": per(&d.by_method, t),
        "watch_notifications_per_handoff": round2(d.notifications / t),
        "client_cpu_us_per_op": micros(cpu, t),
        "server_cpu_us_per_op": d.server_cpu.map(|c| micros(c, t)),
    }))
}

/// W3: `n` clients, each looping on its own lock.
pub async fn independent(target: &Target, n: usize, duration: Duration) -> Result<Value> {
    let clients = target.clients(&format!("bench-w3-{n}"), n).await?;
    for (i, c) in clients.iter().enumerate() {
        c.locks.lock(&format!("w3-{i}")).await.map_err(lock_error)?.release().await.map_err(lock_error)?;
    }
    let cpu = own_cpu();
    let before = target.snapshot().await?;
    let (loops, elapsed) = run_loops(&clients, |i| format!("w3-{i}"), duration).await?;
    let cpu = own_cpu() - cpu;
    let d = target.snapshot().await?.since(&before);
    let total: u64 = loops.iter().map(|l| l.acquisitions).sum();
    let mut waits = Latencies::default();
    for l in loops {
        waits.extend(l.waits);
    }
    Ok(json!({
        "workload": "W3-independent", "backend": target.kind.label(), "clients": n,
        "seconds": round2(elapsed.as_secs_f64()), "acquisitions": total,
        "ops_per_s": (total as f64 / elapsed.as_secs_f64()).round(),
        "acquire_p50_ms": round2(waits.percentile_ms(50.0)), "acquire_p99_ms": round2(waits.percentile_ms(99.0)),
        "client_cpu_us_per_op": micros(cpu, total as f64),
        "server_cpu_us_per_op": d.server_cpu.map(|c| micros(c, total as f64)),
    }))
}

/// W4: `n` waiters, each its own session, queued behind a holder; then the holder releases and
/// each waiter releases as soon as it holds.
pub async fn scale(target: &Target, n: usize) -> Result<Value> {
    let space = format!("bench-w4-{n}");
    let holder = target.client(&space).await?;
    holder.locks.lock("w4").await.map_err(lock_error)?.release().await.map_err(lock_error)?;
    let clients = target.clients(&space, n).await?;
    let idle = target.idle_requests_per_s().await?;
    let counted = BenchClient::requests_of(&clients);
    let before = target.snapshot().await?;
    let guard = holder.locks.lock("w4").await.map_err(lock_error)?;
    let mut tasks = Vec::new();
    for c in &clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let g = c.locks.lock("w4").await.map_err(lock_error)?;
            g.release().await.map_err(lock_error)
        }));
    }
    // Every waiter has queued and started its watch: each has sent its queueing requests
    // (etcd: Txn + watch; ZooKeeper: create + getChildren + exists). Waiting for quiet
    // lets the last watches be confirmed.
    let per_waiter = if target.kind == Kind::Etcd { 2 } else { 3 };
    let queue_bound = Instant::now() + Duration::from_secs(120);
    while BenchClient::requests_of(&clients) < counted + per_waiter * n as u64 {
        if Instant::now() > queue_bound {
            return Err(std::io::Error::other(format!("{n} waiters did not queue within 120 s")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then until nobody has sent anything for 300 ms (gap reads, last watches).
    let mut last = BenchClient::requests_of(&clients);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = BenchClient::requests_of(&clients);
        if now == last || Instant::now() > queue_bound {
            break;
        }
        last = now;
    }
    let queued = target.snapshot().await?;
    let counted_queued = BenchClient::requests_of(&clients);
    let cpu = own_cpu();
    guard.release().await.map_err(lock_error)?;
    for t in tasks {
        t.await.map_err(std::io::Error::other)??;
    }
    let cpu = own_cpu() - cpu;
    let after = target.snapshot().await?;
    let handoffs = after.since(&queued);
    let whole = after.since(&before);
    let k = n as f64;
    // The holder's own acquire and release are in `whole`; its release is in `handoffs`.
    let holder_requests = if target.kind == Kind::Etcd { 2.0 } else { 3.0 };
    let counted_after = BenchClient::requests_of(&clients);
    Ok(json!({
        "workload": "W4-scale", "backend": target.kind.label(), "waiters": n,
        "handoff_ms": round2(handoffs.elapsed.as_secs_f64() * 1000.0 / k),
        "handoffs_per_s": (k / handoffs.elapsed.as_secs_f64()).round(),
        "server_requests_per_acquisition": round2((target.lock_requests(&whole, idle) - holder_requests) / k),
        "server_requests_per_handoff": round2((target.lock_requests(&handoffs, idle) - 1.0) / k),
        "client_requests_per_acquisition": round2((counted_after - counted) as f64 / k),
        "client_requests_per_handoff": round2((counted_after - counted_queued) as f64 / k),
        "by_method_per_handoff": per(&handoffs.by_method, k),
        "watch_notifications_per_handoff": round2(handoffs.notifications / k),
        "server_cpu_us_per_handoff": handoffs.server_cpu.map(|c| micros(c, k)),
        "client_cpu_us_per_handoff": micros(cpu, k),
    }))
}

/// The client heap once the previous workloads' clients have finished closing (their sessions
/// and tasks end in the background): read every 100 ms until it moves by less than 64 KiB, for
/// at most 5 s. Without it the baseline can include memory freed during the measurement.
async fn settled_live_bytes() -> i64 {
    let mut last = crate::alloc::live_bytes();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = crate::alloc::live_bytes();
        if (now - last).abs() < 64 * 1024 {
            return now;
        }
        last = now;
    }
    last
}

/// W4, second part: one session holds `locks` locks; what that costs while idle.
pub async fn many_locks(target: &Target, locks: usize, idle_for: Duration) -> Result<Value> {
    let client = target.client("bench-w4-many").await?;
    let live_before = settled_live_bytes().await;
    let rss_before = own_rss_bytes();
    let started = Instant::now();
    let guards: Vec<LockGuard> = futures::stream::iter(0..locks)
        .map(|i| {
            let c = client.locks.clone();
            async move { c.lock(&format!("many-{i}")).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<std::result::Result<_, _>>()
        .map_err(lock_error)?;
    let acquire_s = started.elapsed().as_secs_f64();
    // Let the holds settle (etcd starts a hold's own-key watch after a short grace).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_held, live_held) = (own_rss_bytes(), crate::alloc::live_bytes());
    let idle_before = target.snapshot().await?;
    let cpu = own_cpu();
    tokio::time::sleep(idle_for).await;
    let cpu = own_cpu() - cpu;
    let idle = target.snapshot().await?.since(&idle_before);
    let secs = idle.elapsed.as_secs_f64();
    let held = guards.iter().filter(|g| g.is_held()).count();
    let release_started = Instant::now();
    futures::stream::iter(guards)
        .map(|g| async move { g.release().await })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let release_s = release_started.elapsed().as_secs_f64();
    Ok(json!({
        "workload": "W4-many-locks", "backend": target.kind.label(), "locks": locks, "held_after_idle": held,
        "acquire_s": round2(acquire_s), "release_s": round2(release_s),
        "client_heap_bytes_per_lock": ((live_held - live_before) as f64 / locks as f64).round(),
        "client_rss_growth_bytes_per_lock": ((rss_held.saturating_sub(rss_before)) as f64 / locks as f64).round(),
        "idle_seconds": round2(secs),
        "idle_server_requests_per_s": round2((idle.requests - 1.0).max(0.0) / secs),
        "idle_keepalives_per_s": round2(idle.keepalives / secs),
        "idle_client_cpu_ms_per_s": round2(cpu.as_secs_f64() * 1000.0 / secs),
        "idle_server_cpu_ms_per_s": idle.server_cpu.map(|c| round2(c.as_secs_f64() * 1000.0 / secs)),
    }))
}

/// W5: `tasks` tasks of one client wait on one lock that another client holds.
pub async fn local_queue(target: &Target, tasks: usize) -> Result<Value> {
    let holder = target.client("bench-w5").await?;
    let client = Arc::new(target.client("bench-w5").await?);
    holder.locks.lock("w5").await.map_err(lock_error)?.release().await.map_err(lock_error)?;
    let guard = holder.locks.lock("w5").await.map_err(lock_error)?;
    let counted = client.requests();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let c = client.clone();
        handles.push(tokio::spawn(async move {
            let g = c.locks.lock("w5").await.map_err(lock_error)?;
            g.release().await.map_err(lock_error)
        }));
    }
    let bound = Instant::now() + Duration::from_secs(30);
    let mut info = holder.locks.inspect("w5").await.map_err(lock_error)?;
    while info.waiters.is_empty() && Instant::now() < bound {
        tokio::time::sleep(Duration::from_millis(10)).await;
        info = holder.locks.inspect("w5").await.map_err(lock_error)?;
    }
    // Give the other tasks time to pile up in the local queue; the server must still see one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = holder.locks.inspect("w5").await.map_err(lock_error)?;
    let started = Instant::now();
    guard.release().await.map_err(lock_error)?;
    for h in handles {
        h.await.map_err(std::io::Error::other)??;
    }
    let elapsed = started.elapsed();
    Ok(json!({
        "workload": "W5-local-queue", "backend": target.kind.label(), "tasks": tasks,
        "server_waiters": info.waiters.len(),
        "seconds_for_all": round2(elapsed.as_secs_f64()),
        "client_requests_per_acquisition": round2((client.requests() - counted) as f64 / tasks as f64),
    }))
}
