//! Quickstart: four workers, each its own client (its own session), contend for one lock and
//! print a timeline: when each one's entry joined the server's queue (with the fencing token it
//! will hold with), who held the lock with which token, and who released. At the end it checks
//! what a fair lock promises: the lock was granted in queue order, every holder's token is the
//! one its entry queued with, tokens only grow, and no two holders overlapped.
//!
//! ```text
//! cargo run --example quickstart                 # in-process mem:// backend, no server
//! cargo run --example quickstart -- URL          # the same on another backend's URL
//! RUST_LOG=distlock=debug cargo run --example quickstart   # with the library's tracing
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{DistributedLock, FencingToken, WaitProgress};
use tokio::time::Instant;

const WORKERS: usize = 4;
const ROUNDS: usize = 2;
const LOCK: &str = "quickstart/nightly-report";

/// What happened, in the order it happened.
#[derive(Default)]
struct Timeline {
    /// (worker, the token its entry queued with), in the order the entries were queued.
    queued: Vec<(usize, FencingToken)>,
    /// (worker, token, whether another holder was inside), in the order the lock was granted.
    held: Vec<(usize, FencingToken, bool)>,
}

// One thread: each step is printed right where it happens, so the lines are in the order of
// the steps (on mem:// exactly the server's order).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::args().nth(1).unwrap_or_else(|| "mem://".to_owned());
    println!("distlock quickstart on {url}: {WORKERS} workers, {ROUNDS} rounds each, one lock {LOCK:?}\n");

    let started = Instant::now();
    let log = move |worker: usize, what: String| {
        println!("[{:>5} ms] worker {worker}  {what}", started.elapsed().as_millis());
    };
    let inside = Arc::new(AtomicBool::new(false));
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let mut clients = Vec::new();
    for _ in 0..WORKERS {
        match distlock::connect(&url).await {
            Ok(locks) => clients.push(Arc::<dyn DistributedLock>::from(locks)),
            Err(error) => {
                eprintln!("cannot connect to {url}: {error}");
                return ExitCode::from(69);
            }
        }
    }
    let mut tasks = Vec::new();
    for (worker, locks) in clients.iter().cloned().enumerate() {
        let (inside, timeline) = (inside.clone(), timeline.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let progress = |step: WaitProgress| match step {
                    WaitProgress::Queued { entry } => {
                        timeline.lock().unwrap().queued.push((worker, entry.token));
                        log(worker, format!("queued, to hold with fencing token {}", entry.token));
                    }
                    WaitProgress::Waiting { ahead, .. } => log(worker, format!("waits, {ahead} ahead of it")),
                    _ => {}
                };
                let guard = locks.lock_with_progress(LOCK, Duration::from_secs(10), &progress).await?;
                let token = guard.fencing_token();
                let overlapped = inside.swap(true, Ordering::SeqCst);
                timeline.lock().unwrap().held.push((worker, token, overlapped));
                log(worker, format!("HOLDS the lock, fencing token {token}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(40)) => {}
                    reason = guard.lost() => log(worker, format!("LOST the lock: {reason}")),
                }
                inside.store(false, Ordering::SeqCst);
                log(worker, "releases".into());
                guard.release().await?;
            }
            Ok::<(), distlock::LockError>(())
        }));
    }
    let mut failed = false;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("a worker failed: {error}");
                failed = true;
            }
            Err(join) => {
                eprintln!("a worker panicked: {join}");
                failed = true;
            }
        }
    }
    // End every session and wait for the server to confirm: nothing is left behind.
    for locks in &clients {
        if let Err(error) = locks.close().await {
            eprintln!("closing a client was not confirmed: {error}");
            failed = true;
        }
    }
    if failed {
        return ExitCode::FAILURE;
    }

    let timeline = std::mem::take(&mut *timeline.lock().unwrap());
    let mut queue_order = timeline.queued.clone();
    queue_order.sort_by_key(|(_, token)| *token); // the server's queue order
    let grant_order: Vec<(usize, FencingToken)> = timeline.held.iter().map(|(w, t, _)| (*w, *t)).collect();
    let workers =
        |order: &[(usize, FencingToken)]| order.iter().map(|(w, _)| w.to_string()).collect::<Vec<_>>().join(" ");
    let increasing = grant_order.windows(2).all(|w| w[0].1 < w[1].1);
    let overlaps = timeline.held.iter().filter(|(_, _, overlapped)| *overlapped).count();
    let fifo = queue_order == grant_order;
    println!("\nqueue order: workers {}", workers(&queue_order));
    println!("grant order: workers {}", workers(&grant_order));
    let tokens: Vec<String> = grant_order.iter().map(|(_, t)| t.to_string()).collect();
    println!("fencing tokens in grant order: {}", tokens.join(" < "));
    println!(
        "granted in queue order (each with the token it queued with): {fifo}; tokens strictly increasing: \
         {increasing}; holders overlapping: {overlaps}"
    );
    if fifo && increasing && overlaps == 0 && grant_order.len() == WORKERS * ROUNDS {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
