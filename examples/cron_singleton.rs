//! Cron singleton: several instances of a service tick together; each tick exactly one of them
//! runs the job. The winner holds the lock until the tick ends, so a slower instance cannot run
//! the same tick's job again after a quick release.
//!
//! ```text
//! cargo run --example cron_singleton                       # mem://
//! cargo run --example cron_singleton --features etcd -- etcd://127.0.0.1:2379
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

const INSTANCES: usize = 3;
const TICKS: u32 = 5;
const TICK: Duration = Duration::from_millis(300);

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::args().nth(1).unwrap_or_else(|| "mem://".to_owned());
    println!("{INSTANCES} instances on {url}, {TICKS} ticks of {TICK:?}\n");
    let runs = Arc::new(Mutex::new(BTreeMap::<u32, Vec<usize>>::new()));
    let start = Instant::now() + Duration::from_millis(100);
    let mut instances = Vec::new();
    for instance in 0..INSTANCES {
        let locks = match distlock::connect(&url).await {
            Ok(locks) => locks,
            Err(e) => {
                eprintln!("cannot connect to {url}: {e}");
                return ExitCode::from(69);
            }
        };
        let runs = runs.clone();
        instances.push(tokio::spawn(async move {
            for tick in 0..TICKS {
                let tick_start = start + TICK * tick;
                let tick_end = tick_start + TICK;
                tokio::time::sleep_until(tick_start).await;
                // Every instance tries; the one that gets it runs the job and keeps the lock
                // until the tick is over.
                match locks.try_lock("cron/nightly-report").await? {
                    Some(guard) => {
                        println!(
                            "tick {tick}: instance {instance} runs the job (fencing token {})",
                            guard.fencing_token()
                        );
                        runs.lock().unwrap().entry(tick).or_default().push(instance);
                        tokio::time::sleep_until(tick_end - Duration::from_millis(50)).await;
                        guard.release().await?;
                    }
                    None => println!("tick {tick}: instance {instance} skips: another instance has it"),
                }
            }
            // The instance shuts down: its session ends on the server before the process exits.
            locks.close().await
        }));
    }
    for instance in instances {
        match instance.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("an instance failed: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("an instance panicked: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let runs = runs.lock().unwrap();
    let exactly_once = (0..TICKS).all(|t| runs.get(&t).map(Vec::len) == Some(1));
    println!("\neach tick's job ran exactly once: {exactly_once} ({runs:?})");
    if exactly_once {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
