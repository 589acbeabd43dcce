//! Quickstart: four workers, each its own client (its own session), contend for one lock and
//! print a timeline of who queued, who held it with which fencing token, and who released.
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

use tokio::time::Instant;

const WORKERS: usize = 4;
const ROUNDS: usize = 2;
const LOCK: &str = "quickstart/nightly-report";

#[tokio::main]
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
    let holds = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let locks = match distlock::connect(&url).await {
            Ok(locks) => locks,
            Err(error) => {
                eprintln!("cannot connect to {url}: {error}");
                return ExitCode::from(69);
            }
        };
        let (inside, holds) = (inside.clone(), holds.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                log(worker, "queues for the lock".into());
                let guard = locks.lock(LOCK).await?;
                let token = guard.fencing_token();
                log(worker, format!("HOLDS the lock, fencing token {token}"));
                let overlapped = inside.swap(true, Ordering::SeqCst);
                holds.lock().unwrap().push((token, overlapped));
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
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("a worker failed: {error}");
                return ExitCode::FAILURE;
            }
            Err(join) => {
                eprintln!("a worker panicked: {join}");
                return ExitCode::FAILURE;
            }
        }
    }

    let holds = holds.lock().unwrap().clone();
    let tokens: Vec<String> = holds.iter().map(|(t, _)| t.to_string()).collect();
    let increasing = holds.windows(2).all(|w| w[0].0 < w[1].0);
    let overlaps = holds.iter().filter(|(_, overlapped)| *overlapped).count();
    println!("\n{} holds; fencing tokens in order: {}", holds.len(), tokens.join(" < "));
    println!("tokens strictly increasing: {increasing}; holders overlapping: {overlaps}");
    if increasing && overlaps == 0 && holds.len() == WORKERS * ROUNDS {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
