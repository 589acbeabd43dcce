//! Redis lock peers beside distlock-bench's W1 and W2, one JSON line per run:
//!
//! ```text
//! redis-peers --redis HOST:PORT --peer rslock|bare|script --workload w1 --cycles 1000
//! redis-peers --redis HOST:PORT --peer rslock|bare --workload w2 --clients 8 --seconds 5
//! ```
//!
//! `rslock`: the crate's `LockManager` on one instance (Redlock with a quorum of one), its
//! default retries (3, up to 200 ms apart), `acquire_no_guard` looping until it holds.
//! `bare`: `SET key token NX PX 30000`, retried every 1 ms until it succeeds, and a `DEL`
//! (unfenced): the floor of a Redis lock. Each client has its own connection.
//! `script` (W1 only, not a lock): two `EVALSHA` per cycle of a script that returns at once,
//! the floor of any lock that runs one script per request, as distlock does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

enum Peer {
    Rslock(rslock::LockManager),
    Bare(redis::aio::MultiplexedConnection, u64),
    Script(redis::aio::MultiplexedConnection, redis::Script),
}

/// A connection of its own to `url`.
async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("url");
    client.get_multiplexed_async_connection().await.expect("connect")
}

impl Peer {
    async fn new(kind: &str, endpoint: &str, id: u64) -> Peer {
        let url = format!("redis://{endpoint}/");
        match kind {
            "rslock" => Peer::Rslock(rslock::LockManager::new(vec![url])),
            "bare" => Peer::Bare(connect(&url).await, id),
            "script" => Peer::Script(connect(&url).await, redis::Script::new("return 1")),
            other => panic!("unknown peer {other}; rslock, bare or script"),
        }
    }

    /// Acquires `name`, then releases it; returns the wait.
    async fn cycle(&mut self, name: &str, hold: impl std::future::Future<Output = ()>) -> Duration {
        let started = Instant::now();
        match self {
            Peer::Rslock(manager) => {
                let lock = manager.acquire_no_guard(name.as_bytes(), Duration::from_secs(30)).await.expect("acquire");
                let waited = started.elapsed();
                hold.await;
                manager.unlock(&lock).await;
                waited
            }
            Peer::Bare(connection, id) => {
                loop {
                    let set: Option<String> = redis::cmd("SET")
                        .arg(name)
                        .arg(*id)
                        .arg("NX")
                        .arg("PX")
                        .arg(30_000)
                        .query_async(connection)
                        .await
                        .expect("SET");
                    if set.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let waited = started.elapsed();
                hold.await;
                let _: i64 = redis::cmd("DEL").arg(name).query_async(connection).await.expect("DEL");
                waited
            }
            Peer::Script(connection, script) => {
                let _: i64 = script.key(name).invoke_async(connection).await.expect("EVALSHA");
                let waited = started.elapsed();
                hold.await;
                let _: i64 = script.key(name).invoke_async(connection).await.expect("EVALSHA");
                waited
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str, default: &str| {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned().unwrap_or(default.to_owned())
    };
    let (endpoint, kind, workload) = (get("--redis", "127.0.0.1:6379"), get("--peer", "rslock"), get("--workload", "w1"));
    let label = match kind.as_str() {
        "rslock" => "rslock 0.9 (Redlock, one instance)",
        "script" => "two EVALSHA of a script that only returns (not a lock)",
        _ => "bare SET NX PX + DEL (retry 1 ms)",
    };
    let name = format!("peer-{}-{}", kind, std::process::id());
    if workload == "w1" {
        let cycles: usize = get("--cycles", "1000").parse().expect("cycles");
        let mut peer = Peer::new(&kind, &endpoint, 1).await;
        // In a spawned task, as distlock-bench runs its workloads: on a worker thread, not on
        // the thread that blocks on the runtime.
        let elapsed = tokio::spawn(async move {
            let started = Instant::now();
            for _ in 0..cycles {
                peer.cycle(&name, async {}).await;
            }
            started.elapsed()
        })
        .await
        .expect("the W1 task");
        let rate = cycles as f64 / elapsed.as_secs_f64();
        let line = serde_json::json!({"implementation": label, "workload": "W1-uncontended", "cycles": cycles, "ops_per_s": rate.round()});
        println!("{line}");
        return;
    }
    let clients: usize = get("--clients", "8").parse().expect("clients");
    let seconds: f64 = get("--seconds", "5").parse().expect("seconds");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for id in 0..clients {
        let mut peer = Peer::new(&kind, &endpoint, id as u64 + 1).await;
        let (stop, name) = (stop.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                waits.push(peer.cycle(&name, tokio::task::yield_now()).await);
            }
            waits
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut per_client = Vec::new();
    let mut waits = Vec::new();
    for task in tasks {
        let w = task.await.expect("client");
        per_client.push(w.len());
        waits.extend(w);
    }
    let elapsed = started.elapsed().as_secs_f64();
    waits.sort();
    let (max, min) = (*per_client.iter().max().unwrap_or(&0), *per_client.iter().min().unwrap_or(&0));
    let line = serde_json::json!({
        "implementation": label, "workload": "W2-contended", "clients": clients, "seconds": seconds,
        "acquisitions": waits.len(), "handoffs_per_s": (waits.len() as f64 / elapsed).round(),
        "fairness_max_over_min": if min == 0 { f64::INFINITY } else { (max as f64 / min as f64 * 100.0).round() / 100.0 },
        "wait_p50_ms": (percentile(&waits, 50.0) * 100.0).round() / 100.0,
        "wait_p99_ms": (percentile(&waits, 99.0) * 100.0).round() / 100.0,
    });
    println!("{line}");
}
