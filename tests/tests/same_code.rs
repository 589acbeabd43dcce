//! The same application code, given another URL, runs on another backend: one function, four
//! URLs, the same guarantees.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use distlock_tests::shared;

/// Application code that knows nothing of backends: workers take turns on one lock, each
/// recording its fencing token and whether another worker was inside at the same time.
async fn app(url: &str) -> Vec<(u64, bool)> {
    let inside = Arc::new(AtomicBool::new(false));
    let holds = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let locks = distlock::connect(url).await.expect("connect");
        let (inside, holds) = (inside.clone(), holds.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..3 {
                let guard = locks.lock("app/report").await.expect("lock");
                let overlapped = inside.swap(true, Ordering::SeqCst);
                holds.lock().unwrap().push((guard.fencing_token().get(), overlapped));
                tokio::task::yield_now().await;
                inside.store(false, Ordering::SeqCst);
                guard.release().await.expect("release");
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let holds = holds.lock().unwrap().clone();
    holds
}

fn assert_correct(url: &str, holds: &[(u64, bool)]) {
    assert_eq!(holds.len(), 9, "{url}");
    assert!(holds.iter().all(|(_, overlapped)| !overlapped), "{url}: two holders at once");
    assert!(holds.windows(2).all(|w| w[0].0 < w[1].0), "{url}: tokens must increase: {holds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_function_four_backends() {
    let run = uuid::Uuid::new_v4();
    let urls = [
        format!("mem://same-code-{run}"),
        format!("etcd://{}/same-code-{run}?ttl=5s", shared::etcd().await.endpoints.join(",")),
        format!("zk://{}/same-code-{run}?session_timeout=5s", shared::zookeeper().await.endpoints.join(",")),
        format!("redis://{}?prefix=same-code-{run}&ttl=5s", shared::redis().await.endpoints[0]),
    ];
    for url in &urls {
        assert_correct(url, &app(url).await);
    }
}
