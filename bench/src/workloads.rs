//! The workloads W1 to W5, E1 to E4, R2, S1 and S2 (defined in docs/BENCHMARKS.md), each generic over
//! the backend and the recipe, each returning one JSON object (printed as one line by `main`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distlock_core::LockGuard;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::stats::{own_cpu, own_rss_bytes, Latencies};
use crate::target::{BenchClient, Kind, Target};

type Result<T> = std::io::Result<T>;

pub(crate) fn lock_error(e: distlock_core::LockError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// What a workload's clients take in turn: a lock, or leadership of an election (campaign, then
/// resign). Both run on the same queue; the workloads measure either through the same loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    Lock,
    Election,
    /// A read-write lock, each acquisition a read one in `read_percent` (at random).
    ReadWrite {
        read_percent: u64,
    },
    /// A semaphore of this many permits.
    Permits(u32),
}

impl Recipe {
    /// Takes `name` as this recipe does; the guard's release gives it up (an election's resigns).
    pub(crate) async fn take(self, client: &BenchClient, name: &str) -> Result<LockGuard> {
        match self {
            Recipe::Lock => client.locks.lock(name).await.map_err(lock_error),
            Recipe::Election => client.locks.campaign(name, "bench").await.map(|l| l.into_guard()).map_err(lock_error),
            Recipe::ReadWrite { read_percent } if next_percent() < read_percent => {
                client.locks.read_lock(name).await.map_err(lock_error)
            }
            Recipe::ReadWrite { .. } => client.locks.write_lock(name).await.map_err(lock_error),
            Recipe::Permits(permits) => client.locks.acquire_permit(name, permits).await.map_err(lock_error),
        }
    }

    /// How many clients block the queue in a W4-style round, and their take: a write lock for
    /// the read-write lock (readers queue behind it), every permit for the semaphore (each
    /// client holds at most one), the recipe itself otherwise.
    fn blockers(self) -> (usize, Recipe) {
        match self {
            Recipe::ReadWrite { .. } => (1, Recipe::ReadWrite { read_percent: 0 }),
            Recipe::Permits(permits) => (permits as usize, self),
            _ => (1, self),
        }
    }

    /// The workload label's letter: W for the lock, E for the election, R for the read-write
    /// lock, S for the semaphore.
    fn letter(self) -> &'static str {
        match self {
            Recipe::Lock => "W",
            Recipe::Election => "E",
            Recipe::ReadWrite { .. } => "R",
            Recipe::Permits(_) => "S",
        }
    }

    /// The recipe's parameters, for the workload's line.
    fn parameters(self) -> Value {
        match self {
            Recipe::ReadWrite { read_percent } => json!({ "read_percent": read_percent }),
            Recipe::Permits(permits) => json!({ "permits": permits }),
            _ => json!({}),
        }
    }

    /// The workload's label: `W2-contended`, `E2-contended`.
    fn label(self, number: u8, what: &str) -> String {
        format!("{}{number}-{what}", self.letter())
    }
}

/// A number in 0..100, from one xorshift sequence shared by all clients (a fixed seed: runs
/// draw the same sequence of reads and writes).
fn next_percent() -> u64 {
    use std::sync::atomic::AtomicU64;
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.load(Ordering::Relaxed);
    loop {
        let mut next = x;
        next ^= next << 13;
        next ^= next >> 7;
        next ^= next << 17;
        match STATE.compare_exchange_weak(x, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next % 100,
            Err(seen) => x = seen,
        }
    }
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

/// One round of the raw floor and, if `w1_cycles`, of W1: the floor's cycles are split in two
/// halves run before and after W1's, so the machine's drift during the round weighs on both
/// alike. The floor's line, and W1's with the round's floor ratio.
pub async fn floor_round(
    target: &Target,
    floor_cycles: usize,
    w1_cycles: Option<usize>,
) -> Result<(Value, Option<Value>)> {
    let before = target.snapshot().await?;
    let first = target.raw_floor(floor_cycles.div_ceil(2)).await?;
    let first_cpu = target.snapshot().await?.since(&before).server_cpu;
    let mut w1 = match w1_cycles {
        Some(cycles) => Some(uncontended(target, cycles, Recipe::Lock).await?),
        None => None,
    };
    let before = target.snapshot().await?;
    let floor = first.and(target.raw_floor(floor_cycles / 2).await?);
    let server_cpu = first_cpu.zip(target.snapshot().await?.since(&before).server_cpu).map(|(a, b)| a + b);
    let what = match target.kind {
        Kind::Etcd => "bare put + delete of one key",
        Kind::Zk => "bare create + delete of one znode",
        Kind::Redis => "bare SET NX PX + DEL of one key",
    };
    let (cycles, rate) = (floor.cycles(), floor.cycles_per_s());
    let line = json!({
        "workload": "floor", "backend": target.kind.label(), "what": what, "cycles": cycles,
        "cycles_per_s": rate.round(), "cycle_p50_ms": round2(floor.cycle_p50_ms()),
        "server_requests_per_cycle": 2, "client_cpu_us_per_cycle": round2(floor.client_cpu_us_per_cycle()),
        "server_cpu_us_per_cycle": server_cpu.map(|c| micros(c, cycles as f64)),
    });
    if let Some(w1) = w1.as_mut() {
        let ops = w1["ops_per_s"].as_f64().unwrap_or(f64::NAN);
        w1["floor_cycles_per_s"] = json!(rate.round());
        w1["floor_ratio"] = json!(round2(rate / ops));
    }
    Ok((line, w1))
}

/// Of rounds of the floor and W1, the round whose floor ratio is the median (the
/// lower middle one for an even count): its floor and W1 lines, the W1 line also listing every
/// round's ratio and rate. Without W1, the floor line with the median rate.
pub fn median_round(mut rounds: Vec<(Value, Option<Value>)>) -> Vec<Value> {
    let key = |(floor, w1): &(Value, Option<Value>)| match w1 {
        Some(w1) => w1["floor_ratio"].as_f64().unwrap_or(f64::MAX),
        None => floor["cycles_per_s"].as_f64().unwrap_or_default(),
    };
    let ratios: Vec<Value> =
        rounds.iter().filter_map(|(_, w1)| w1.as_ref().map(|w| w["floor_ratio"].clone())).collect();
    let rates: Vec<Value> = rounds.iter().filter_map(|(_, w1)| w1.as_ref().map(|w| w["ops_per_s"].clone())).collect();
    rounds.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let count = rounds.len();
    let Some((floor, w1)) = rounds.into_iter().nth(count.saturating_sub(1) / 2) else { return Vec::new() };
    let w1 = w1.map(|mut w1| {
        w1["rounds"] = json!(count);
        w1["floor_ratio_of_rounds"] = json!(ratios);
        w1["ops_per_s_of_rounds"] = json!(rates);
        w1
    });
    std::iter::once(floor).chain(w1).collect()
}

/// W1 (E1): one client acquires and releases one lock (campaigns and resigns) `cycles` times.
pub async fn uncontended(target: &Target, cycles: usize, recipe: Recipe) -> Result<Value> {
    let client = target.client(&format!("bench-{}1", recipe.letter().to_lowercase())).await?;
    // The first cycle makes what a long-lived lock has (ZooKeeper's lock directory).
    recipe.take(&client, "w1").await?.release().await.map_err(lock_error)?;
    let idle = target.idle_requests_per_s().await?;
    let (mut acquire, mut release) = (Latencies::default(), Latencies::default());
    let counted = client.requests();
    let before = target.snapshot().await?;
    let cpu = own_cpu();
    let started = Instant::now();
    for _ in 0..cycles {
        let t = Instant::now();
        let guard = recipe.take(&client, "w1").await?;
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
    client.close().await;
    Ok(json!({
        "workload": recipe.label(1, "uncontended"), "backend": target.kind.label(), "cycles": cycles,
        "ops_per_s": ops.round(),
        "acquire_p50_ms": round2(acquire.percentile_ms(50.0)), "acquire_p99_ms": round2(acquire.percentile_ms(99.0)),
        "release_p50_ms": round2(release.percentile_ms(50.0)), "release_p99_ms": round2(release.percentile_ms(99.0)),
        "acquire_mean_ms": round2(acquire.mean_ms()), "release_mean_ms": round2(release.mean_ms()),
        "server_requests_per_cycle": round2(target.lock_requests(&d, idle) / n),
        "client_requests_per_cycle": round2((client.requests() - counted) as f64 / n),
        "by_method_per_cycle": per(&d.by_method, n),
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

/// Random pauses between a client's release and its next lock, from 0 up to a bound: the
/// clients then queue in a new order each round, as services that contend now and then do.
/// A xorshift generator, seeded per client: reproducible, and no dependency for it.
struct Pauses {
    state: u64,
    max_micros: u64,
}

impl Pauses {
    fn new(client: u64, max: Duration) -> Self {
        Pauses {
            state: 0x9E37_79B9_7F4A_7C15 ^ (client + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            max_micros: max.as_micros() as u64,
        }
    }
}

impl Iterator for Pauses {
    type Item = Duration;

    /// The next pause; none when the bound is 0.
    fn next(&mut self) -> Option<Duration> {
        if self.max_micros == 0 {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        Some(Duration::from_micros(self.state % (self.max_micros + 1)))
    }
}

/// Each client loops acquire → release on `name_of(i)` until `stop`.
async fn run_loops(
    clients: &[Arc<BenchClient>],
    name_of: impl Fn(usize) -> String,
    duration: Duration,
    pause_max: Duration,
    recipe: Recipe,
) -> Result<(Vec<Loop>, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let (c, stop, name) = (c.clone(), stop.clone(), name_of(i));
        let mut pauses = Pauses::new(i as u64, pause_max);
        tasks.push(tokio::spawn(async move {
            let mut out = Loop::default();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let guard = recipe.take(&c, &name).await?;
                out.waits.push(t.elapsed());
                out.acquisitions += 1;
                guard.release().await.map_err(lock_error)?;
                if let Some(pause) = pauses.next() {
                    tokio::time::sleep(pause).await;
                }
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

/// W2 (E2): `n` clients, each its own session, loop acquire → release on one lock (campaign →
/// resign), each pausing at random up to `pause_max` after a release (0: never; the clients
/// then take turns in a fixed order).
pub async fn contended(
    target: &Target,
    n: usize,
    duration: Duration,
    pause_max: Duration,
    recipe: Recipe,
) -> Result<Value> {
    let space = format!("bench-{}2-{n}-{}", recipe.letter().to_lowercase(), pause_max.as_millis());
    let clients = target.clients(&space, n).await?;
    recipe.take(&clients[0], "w2").await?.release().await.map_err(lock_error)?;
    let idle = target.idle_requests_per_s().await?;
    let counted = BenchClient::requests_of(&clients);
    let before = target.snapshot().await?;
    let cpu = own_cpu();
    let (loops, elapsed) = run_loops(&clients, |_| "w2".to_owned(), duration, pause_max, recipe).await?;
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
    BenchClient::close_all(&clients).await;
    Ok(json!({
        "workload": recipe.label(2, "contended"), "backend": target.kind.label(), "clients": n,
        "recipe": recipe.parameters(),
        "pause_max_ms": pause_max.as_millis() as u64,
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
    let (loops, elapsed) = run_loops(&clients, |i| format!("w3-{i}"), duration, Duration::ZERO, Recipe::Lock).await?;
    let cpu = own_cpu() - cpu;
    let d = target.snapshot().await?.since(&before);
    let total: u64 = loops.iter().map(|l| l.acquisitions).sum();
    let mut waits = Latencies::default();
    for l in loops {
        waits.extend(l.waits);
    }
    BenchClient::close_all(&clients).await;
    Ok(json!({
        "workload": "W3-independent", "backend": target.kind.label(), "clients": n,
        "seconds": round2(elapsed.as_secs_f64()), "acquisitions": total,
        "ops_per_s": (total as f64 / elapsed.as_secs_f64()).round(),
        "acquire_p50_ms": round2(waits.percentile_ms(50.0)), "acquire_p99_ms": round2(waits.percentile_ms(99.0)),
        "client_cpu_us_per_op": micros(cpu, total as f64),
        "server_cpu_us_per_op": d.server_cpu.map(|c| micros(c, total as f64)),
    }))
}

/// W4 measures at least this many hand-offs: with fewer waiters than this, it repeats the
/// queue-then-release round. One hand-off alone is a few milliseconds, below the resolution of
/// a server's CPU counter and swamped by one slow request.
const W4_MIN_HANDOFFS: usize = 100;

/// What one or more W4 rounds measured, summed.
#[derive(Default)]
struct ScaleTotals {
    /// From the holder's release until the last waiter held.
    handoff_time: Duration,
    /// Server lock requests from the holder's release until the last waiter held: each
    /// hand-off's release and the next holder's remaining requests.
    handoff_requests: f64,
    /// Server lock requests of the whole round (queueing too), less the holder's acquire.
    acquisition_requests: f64,
    /// As `handoff_requests` and `acquisition_requests`, counted by the clients.
    handoff_client_requests: u64,
    client_requests: u64,
    by_method: std::collections::BTreeMap<String, f64>,
    notifications: f64,
    server_cpu: Option<Duration>,
    client_cpu: Duration,
}

/// W4: `n` waiters, each its own session, queued behind a holder (the read-write lock's: a
/// writer; the semaphore's: one holder per permit); then the holders release and each waiter
/// releases as soon as it holds. Repeated until `W4_MIN_HANDOFFS` hand-offs. Per hand-off: a
/// release and the next acquisition, so the figures read the same for 1 waiter as for 1,000.
pub async fn scale(target: &Target, n: usize, recipe: Recipe) -> Result<Value> {
    let space = format!("bench-{}4-{n}", recipe.letter().to_lowercase());
    let (blockers, _) = recipe.blockers();
    let holders = target.clients(&space, blockers).await?;
    recipe.take(&holders[0], "w4").await?.release().await.map_err(lock_error)?;
    let clients = target.clients(&space, n).await?;
    let idle = target.idle_requests_per_s().await?;
    let rounds = W4_MIN_HANDOFFS.div_ceil(n);
    let mut totals = ScaleTotals { server_cpu: Some(Duration::ZERO), ..ScaleTotals::default() };
    for _ in 0..rounds {
        scale_round(target, &holders, &clients, idle, &mut totals, recipe).await?;
    }
    let k = (n * rounds) as f64;
    BenchClient::close_all(&holders).await;
    BenchClient::close_all(&clients).await;
    let mut line = json!({
        "workload": recipe.label(4, "scale"), "backend": target.kind.label(), "waiters": n, "rounds": rounds,
        "handoff_ms": round2(totals.handoff_time.as_secs_f64() * 1000.0 / k),
        "handoffs_per_s": (k / totals.handoff_time.as_secs_f64()).round(),
        "server_requests_per_acquisition": round2(totals.acquisition_requests / k),
        "server_requests_per_handoff": round2(totals.handoff_requests / k),
        "client_requests_per_acquisition": round2(totals.client_requests as f64 / k),
        "client_requests_per_handoff": round2(totals.handoff_client_requests as f64 / k),
        "by_method_per_handoff": per(&totals.by_method, k),
        "watch_notifications_per_handoff": round2(totals.notifications / k),
        "server_cpu_us_per_handoff": totals.server_cpu.map(|c| micros(c, k)),
        "client_cpu_us_per_handoff": micros(totals.client_cpu, k),
    });
    if let (Value::Object(line), Value::Object(parameters)) = (&mut line, recipe.parameters()) {
        line.extend(parameters);
    }
    Ok(line)
}

/// One W4 round: the holders take the name, every client queues behind them, then the holders
/// release and each waiter releases once it holds, but the last: its release comes after the
/// measurement, which so covers `n` hand-offs, each a release and the next acquisition.
async fn scale_round(
    target: &Target,
    holders: &[Arc<BenchClient>],
    clients: &[Arc<BenchClient>],
    idle: f64,
    totals: &mut ScaleTotals,
    recipe: Recipe,
) -> Result<()> {
    let n = clients.len();
    let everyone: Vec<Arc<BenchClient>> = clients.iter().chain(holders).cloned().collect();
    let counted = BenchClient::requests_of(&everyone);
    let before = target.snapshot().await?;
    let (_, blocking) = recipe.blockers();
    let mut guards = Vec::new();
    for holder in holders {
        guards.push(blocking.take(holder, "w4").await?);
    }
    let holder_acquire = (BenchClient::requests_of(&everyone) - counted) as f64;
    let acquired_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (all_acquired, last_may_release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let mut tasks = Vec::new();
    for c in clients {
        let (c, acquired_count) = (c.clone(), acquired_count.clone());
        let (all_acquired, last_may_release) = (all_acquired.clone(), last_may_release.clone());
        tasks.push(tokio::spawn(async move {
            let g = recipe.take(&c, "w4").await?;
            let acquired = Instant::now();
            if acquired_count.fetch_add(1, Ordering::SeqCst) + 1 == n {
                all_acquired.notify_one();
                last_may_release.notified().await;
            }
            g.release().await.map_err(lock_error)?;
            Ok::<_, std::io::Error>(acquired)
        }));
    }
    // Every waiter has sent its first queueing request (etcd: a Txn, then a watch unless its
    // client already has one on the lock; ZooKeeper: a create, with or followed by a getChildren,
    // then a watch).
    let queue_bound = Instant::now() + Duration::from_secs(120);
    let queued_from = counted + holder_acquire as u64 + n as u64;
    while BenchClient::requests_of(&everyone) < queued_from {
        if Instant::now() > queue_bound {
            return Err(std::io::Error::other(format!("{n} waiters did not queue within 120 s")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then until nobody has sent anything for a while (gap reads, last watches; their replies
    // take about a millisecond here): 300 ms for a long queue, whose requests the server works
    // through for longer, 100 ms for the short ones that repeat the round.
    let quiet = Duration::from_millis(if n >= W4_MIN_HANDOFFS { 300 } else { 100 });
    let mut last = BenchClient::requests_of(&everyone);
    loop {
        tokio::time::sleep(quiet).await;
        let now = BenchClient::requests_of(&everyone);
        if now == last || Instant::now() > queue_bound {
            break;
        }
        last = now;
    }
    let queued = target.snapshot().await?;
    let counted_queued = BenchClient::requests_of(&everyone);
    let cpu = own_cpu();
    let released = Instant::now();
    futures::future::try_join_all(guards.into_iter().map(LockGuard::release)).await.map_err(lock_error)?;
    let handoff_bound = Duration::from_secs(120);
    if tokio::time::timeout(handoff_bound, all_acquired.notified()).await.is_err() {
        return Err(std::io::Error::other(format!("{n} waiters were not all served within {handoff_bound:?}")));
    }
    totals.client_cpu += own_cpu() - cpu;
    let after = target.snapshot().await?;
    let counted_after = BenchClient::requests_of(&everyone);
    last_may_release.notify_one();
    let mut last_acquired = released;
    for t in tasks {
        last_acquired = last_acquired.max(t.await.map_err(std::io::Error::other)??);
    }
    let handoffs = after.since(&queued);
    let whole = after.since(&before);
    totals.handoff_time += last_acquired - released;
    totals.handoff_requests += target.lock_requests(&handoffs, idle);
    // The holders' releases stand in for the last waiters', which come after `after`.
    totals.acquisition_requests += target.lock_requests(&whole, idle) - holder_acquire;
    totals.client_requests += counted_after - counted - holder_acquire as u64;
    totals.handoff_client_requests += counted_after - counted_queued;
    for (method, count) in handoffs.by_method {
        *totals.by_method.entry(method).or_default() += count;
    }
    totals.notifications += handoffs.notifications;
    totals.server_cpu = totals.server_cpu.zip(handoffs.server_cpu).map(|(sum, c)| sum + c);
    Ok(())
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
    client.close().await;
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
    client.close().await;
    holder.close().await;
    Ok(json!({
        "workload": "W5-local-queue", "backend": target.kind.label(), "tasks": tasks,
        "server_waiters": info.waiters.len(),
        "seconds_for_all": round2(elapsed.as_secs_f64()),
        "client_requests_per_acquisition": round2((client.requests() - counted) as f64 / tasks as f64),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_spread_over_the_bound_and_differ_between_clients() {
        assert_eq!(Pauses::new(0, Duration::ZERO).next(), None, "no bound, no pause");
        let bound = Duration::from_millis(3);
        let a: Vec<Duration> = Pauses::new(0, bound).take(1000).collect();
        let b: Vec<Duration> = Pauses::new(1, bound).take(1000).collect();
        assert!(a.iter().all(|p| *p <= bound));
        assert!(a.iter().any(|p| *p < bound / 4) && a.iter().any(|p| *p > bound * 3 / 4), "spread: {:?}", &a[..10]);
        assert_ne!(a, b, "each client pauses differently");
    }

    #[test]
    fn the_median_round_is_kept_whole_and_lists_every_round() {
        let round = |floor: f64, rate: f64, ratio: f64| {
            (
                json!({"workload": "floor", "cycles_per_s": floor}),
                Some(json!({"ops_per_s": rate, "floor_ratio": ratio})),
            )
        };
        let kept =
            median_round(vec![round(900.0, 700.0, 1.29), round(1000.0, 950.0, 1.05), round(1100.0, 990.0, 1.11)]);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0]["cycles_per_s"], 1100.0, "the floor of the median round");
        assert_eq!(kept[1]["floor_ratio"], 1.11);
        assert_eq!(kept[1]["floor_ratio_of_rounds"], json!([1.29, 1.05, 1.11]), "in the order run");
        assert_eq!(kept[1]["ops_per_s_of_rounds"], json!([700.0, 950.0, 990.0]));
        assert_eq!(kept[1]["rounds"], 3);

        let even = median_round(vec![round(1.0, 1.0, 1.4), round(1.0, 1.0, 1.2)]);
        assert_eq!(even[1]["floor_ratio"], 1.2, "the lower middle of an even count");
        let floors = median_round(vec![
            (json!({"cycles_per_s": 3.0}), None),
            (json!({"cycles_per_s": 1.0}), None),
            (json!({"cycles_per_s": 2.0}), None),
        ]);
        assert_eq!(floors, [json!({"cycles_per_s": 2.0})], "floor only: the median rate");
    }
}
