//! Metrics: installs the Prometheus exporter's recorder, lets four workers (each its own client
//! on the in-process `mem://` server) contend for one lock, adds a `try_lock` that misses, a
//! wait that times out, one that is cancelled and a hold whose session is killed, and prints
//! the scrape: what Prometheus would read from `/metrics`. `docs/OPERATIONS.md` explains each
//! metric. The `name` label is on for `jobs/` (`?metrics_names=jobs/`).
//!
//! ```text
//! cargo run --example metrics
//! ```

use std::sync::Arc;
use std::time::Duration;

use distlock::mem::MemLocks;
use distlock::metrics::MetricNames;
use distlock::DistributedLock;
use metrics_exporter_prometheus::PrometheusBuilder;

const WORKERS: usize = 4;
const ROUNDS: usize = 5;
const LOCK: &str = "jobs/nightly-report";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The application installs the recorder; distlock only records.
    let scrape = PrometheusBuilder::new().install_recorder()?;
    let server = distlock::mem::MemServer::new();
    let names = MetricNames::parse("jobs/")?;
    let client = || -> Result<Arc<MemLocks>, distlock::LockError> {
        Ok(Arc::new(MemLocks::connect_to(&server)?.with_metric_names(names.clone())))
    };

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let locks = client()?;
        workers.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let guard = locks.lock(LOCK).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
                guard.release().await?;
            }
            Ok::<(), distlock::LockError>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }

    // A held lock: a try_lock misses, a wait times out, another is cancelled.
    let holder = client()?;
    let other = client()?;
    let guard = holder.lock(LOCK).await?;
    assert!(other.try_lock(LOCK).await?.is_none());
    assert!(other.lock_timeout(LOCK, Duration::from_millis(20)).await?.is_none());
    let cancelled = tokio::time::timeout(Duration::from_millis(20), other.lock(LOCK)).await;
    assert!(cancelled.is_err(), "the wait was cut short");

    // The holder's session dies on the server: the hold is lost.
    holder.backend().kill_session();
    guard.lost().await;
    drop(guard);
    let next = other.lock(LOCK).await?;
    next.release().await?;

    println!("{}", scrape.render());
    Ok(())
}
