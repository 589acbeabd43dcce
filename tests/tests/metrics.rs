//! Metrics, scraped: one Prometheus recorder for the process, the same workload on `mem://` and
//! on a real etcd (contention, a try_lock miss, a timeout, a cancelled wait, an error, a killed
//! session, a release while cut off), and every metric of `distlock::metrics::ALL` found in the
//! scrape with a plausible value; `docs/OPERATIONS.md` documents exactly those.

use std::collections::BTreeMap;
use std::time::Duration;

use distlock::{metrics, LockError};
use distlock_core::conformance::{Harness, MemHarness};
use metrics_exporter_prometheus::PrometheusBuilder;

const LOCK: &str = "metrics/job";
const BOUND: Duration = Duration::from_secs(30);

/// The workload: every outcome an operator would count, once or more.
async fn workload(h: &dyn Harness) {
    // Contention: three clients, four rounds each, 5 ms holds.
    let mut workers = Vec::new();
    for _ in 0..3 {
        let locks = h.client().await;
        workers.push(tokio::spawn(async move {
            for _ in 0..4 {
                let guard = locks.lock(LOCK).await.expect("lock");
                tokio::time::sleep(Duration::from_millis(5)).await;
                guard.release().await.expect("release");
            }
        }));
    }
    for worker in workers {
        tokio::time::timeout(BOUND, worker).await.expect("contention ends").expect("worker");
    }

    // A held lock: a try_lock misses, a wait times out, another is cancelled.
    let (holder, faults) = h.faulty_client().await;
    let other = h.client().await;
    let guard = holder.lock(LOCK).await.expect("lock");
    assert!(other.try_lock(LOCK).await.expect("try_lock").is_none());
    assert!(other.lock_timeout(LOCK, Duration::from_millis(50)).await.expect("timeout").is_none());
    assert!(tokio::time::timeout(Duration::from_millis(50), other.lock(LOCK)).await.is_err());

    // An error: the write side of a name whose read side this client holds.
    let read = other.read_lock("metrics/rw").await.expect("read lock");
    assert!(matches!(other.write_lock("metrics/rw").await, Err(LockError::WouldWaitForItself { .. })));
    read.release().await.expect("release");

    // The holder's session is ended on the server: a loss.
    faults.expire_session().await;
    tokio::time::timeout(BOUND, guard.lost()).await.expect("the loss fires");
    drop(guard);

    // A release while cut off: retried, and perhaps unconfirmed.
    let guard = holder.lock(LOCK).await.expect("lock on a new session");
    faults.cut().await;
    let _ = guard.release().await;
    faults.heal().await;
    let last = tokio::time::timeout(BOUND, other.lock(LOCK)).await.expect("granted").expect("lock");
    last.release().await.expect("release");
    drop((holder, other));
}

/// The scrape's samples: `name{labels}` → value.
fn samples(scrape: &str) -> BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of `metric` (its `_sum`/`_count` series apart) whose labels contain
/// every one of `labels`; `None` if there is none.
fn sum(samples: &BTreeMap<String, f64>, metric: &str, labels: &[&str]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(key, _)| {
            let (name, rest) = key.split_once('{').unwrap_or((key.as_str(), ""));
            name == metric && !rest.contains("quantile") && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// What every backend's scrape must show after [`workload`].
fn check(samples: &BTreeMap<String, f64>, backend: &str) {
    let b = format!("backend=\"{backend}\"");
    let at_least = |metric: &str, labels: &[&str], min: f64| {
        let mut all = vec![b.as_str()];
        all.extend_from_slice(labels);
        let value = sum(samples, metric, &all).unwrap_or_else(|| panic!("{metric} {all:?} missing from the scrape"));
        assert!(value >= min, "{metric} {all:?} = {value}, expected at least {min}");
        value
    };
    let acquisitions = at_least(metrics::ACQUISITIONS, &["recipe=\"lock\""], 14.0);
    assert_eq!(
        at_least(&format!("{}_count", metrics::ACQUIRE_WAIT), &[], 1.0),
        acquisitions + 1.0,
        "one wait per grant"
    );
    assert!(at_least(&format!("{}_sum", metrics::ACQUIRE_WAIT), &[], 0.0) > 0.004, "contended waits take time");
    at_least(&format!("{}_count", metrics::HOLD_TIME), &[], acquisitions);
    assert!(at_least(&format!("{}_sum", metrics::HOLD_TIME), &[], 0.0) >= 0.005 * 12.0, "twelve holds of 5 ms");
    at_least(&format!("{}_count", metrics::RELEASE_TIME), &[], 14.0);
    at_least(metrics::TRY_MISSES, &[], 1.0);
    at_least(metrics::TIMEOUTS, &[], 1.0);
    at_least(metrics::CANCELLATIONS, &[], 1.0);
    at_least(metrics::ACQUIRE_ERRORS, &["recipe=\"write\""], 1.0);
    at_least(metrics::LOSSES, &["reason=\"session_expired\""], 1.0);
    at_least(metrics::SERVER_REQUESTS, &["kind=\"acquire\""], 15.0);
    at_least(metrics::SERVER_REQUESTS, &["kind=\"release\""], 14.0);
    assert_eq!(at_least(metrics::HOLDS, &[], 0.0), 0.0, "nothing held at the end");
    assert_eq!(at_least(metrics::WAITERS, &[], 0.0), 0.0, "nobody waiting at the end");
    at_least(metrics::SESSION_ENDS, &["how=\"expired\""], 1.0);
    let age = at_least(metrics::KEEPALIVE_AGE, &[], 0.0);
    assert!(age < 1.0, "a healthy session's keepalive age is below its TTL: {age} on {backend}: {samples:#?}");
    // The workload's clients are gone; other tests' sessions are not in this process.
    assert!(sum(samples, metrics::SESSIONS, &[&b, "state=\"connected\""]).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_recorded_with_a_plausible_value() {
    let scrape = PrometheusBuilder::new().install_recorder().expect("the test's recorder");

    workload(&MemHarness::new()).await;
    let etcd = distlock_tests::EtcdHarness::new(distlock_tests::shared::etcd().await.endpoints.clone()).await;
    workload(&etcd).await;

    let text = scrape.render();
    let samples = samples(&text);
    check(&samples, "mem");
    check(&samples, "etcd");
    // What only some setups show: an unconfirmed release (mem:// answers a cut-off release at
    // once), and retries after failed replies (etcd retries the cut-off release).
    assert!(sum(&samples, metrics::RELEASES_UNCONFIRMED, &["backend=\"mem\""]).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sum(&samples, metrics::RETRIES, &["backend=\"etcd\""]).unwrap_or(0.0) >= 1.0, "{text}");
    for (metric, _, _) in metrics::ALL {
        assert!(text.contains(&format!("\n{metric}")), "{metric} is not in the scrape:\n{text}");
    }
    println!("{text}");

    // docs/OPERATIONS.md documents each metric, and no other.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATIONS.md")).expect("the doc");
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `distlock_"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let mut expected: Vec<String> =
        metrics::ALL.iter().map(|(m, _, _)| m.trim_start_matches("distlock_").to_owned()).collect();
    expected.sort();
    let mut documented: Vec<String> = documented.iter().map(|m| (*m).to_owned()).collect();
    documented.sort();
    assert_eq!(documented, expected, "docs/OPERATIONS.md's metric table");
}
