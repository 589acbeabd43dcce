//! Scenarios that several backends' integration tests run the same way, on a harness and a
//! server fault the caller supplies.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock_core::conformance::{wait_for_queue, Harness};
use distlock_core::{DistributedLock, LockError, LockGuard};

const BOUND: Duration = Duration::from_secs(30);

/// `waiters` clients queue one after another behind a holder; after the release they must get
/// the lock in exactly their queue order, and nothing may be left on the server.
pub async fn served_in_queue_order(h: &dyn Harness, waiters: usize) {
    let holder = h.client().await;
    let guard = holder.lock("crowd").await.expect("lock");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..waiters {
        let (client, order) = (h.client().await, order.clone());
        tasks.push(tokio::spawn(async move {
            let g = client.lock("crowd").await.expect("lock");
            order.lock().unwrap().push(i);
            g.release().await.expect("release");
        }));
        wait_for_queue(holder.as_ref(), "crowd", BOUND, "waiter to queue", |info| info.waiters.len() == i + 1).await;
    }
    guard.release().await.expect("release");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await.expect("every waiter acquires").expect("task");
    }
    assert_eq!(*order.lock().unwrap(), (0..waiters).collect::<Vec<_>>());
    assert!(h.leftovers().await.is_empty(), "nothing is left on the server");
}

/// A lock is held and waited for while `kill_leader` kills the cluster's leader: the holder
/// keeps the lock (no second holder), and after its release the waiter gets it.
pub async fn leader_loss_keeps_one_holder(h: &dyn Harness, kill_leader: impl Future<Output = ()>) {
    let holder = h.client().await;
    let guard = holder.lock("leader-loss").await.expect("lock");
    let waiter = h.client().await;
    let waiting = tokio::spawn(async move { waiter.lock("leader-loss").await.expect("lock") });
    wait_for_queue(holder.as_ref(), "leader-loss", BOUND, "the waiter to queue", |i| i.waiters.len() == 1).await;
    kill_leader.await;
    let info = wait_for_queue(holder.as_ref(), "leader-loss", BOUND, "the queue after the election", |_| true).await;
    assert_eq!(info.holder.map(|e| e.token), Some(guard.fencing_token()), "still the same holder");
    assert!(!waiting.is_finished(), "no second holder");
    assert!(guard.is_held());
    guard.release().await.expect("release");
    let next = tokio::time::timeout(BOUND, waiting).await.expect("the hand-off happens").expect("task");
    next.release().await.expect("release");
}

/// Two clients connected by `url` (two instances of one service): while the first holds `name`
/// the second cannot take it, and once it is released the second can.
pub async fn two_instances_exclude_each_other(url: &str, name: &str) {
    let a = distlock::connect(url).await.unwrap_or_else(|e| panic!("{url}: connect: {e}"));
    let b = distlock::connect(url).await.unwrap_or_else(|e| panic!("{url}: a second instance connects: {e}"));
    let guard = a.lock(name).await.unwrap_or_else(|e| panic!("{url}: lock: {e}"));
    assert!(b.try_lock(name).await.expect("try_lock").is_none(), "{url}: the lock excludes the second instance");
    guard.release().await.expect("release");
    let guard = b.lock(name).await.unwrap_or_else(|e| panic!("{url}: then the second instance locks: {e}"));
    guard.release().await.expect("release");
}

/// Three instances connected by `url` queue for lock `name` one after another and get it in that
/// order: a release with a waiter behind it, and a wake-up behind a waiter that was not the
/// holder when it queued.
pub async fn three_instances_take_turns(url: &str, name: &str) {
    three_instances_take_turns_on(url, name, None).await
}

/// [`three_instances_take_turns`] on the one permit of a semaphore of `name` (`Some(1)`), or
/// on the lock (`None`).
pub async fn three_instances_take_turns_on(url: &str, name: &str, permits: Option<u32>) {
    let connect = || async { distlock::connect(url).await.unwrap_or_else(|e| panic!("{url}: connect: {e}")) };
    let (a, b, c) = (connect().await, connect().await, connect().await);
    let guard = take(a.as_ref(), name, permits).await.unwrap_or_else(|e| panic!("{url}: lock: {e}"));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (i, client) in [b, c].into_iter().enumerate() {
        let (lock_name, order) = (name.to_owned(), order.clone());
        waiters.push(tokio::spawn(async move {
            let guard = take(client.as_ref(), &lock_name, permits).await.map_err(|e| e.to_string())?;
            order.lock().unwrap().push(i);
            guard.release().await.map_err(|e| e.to_string())
        }));
        wait_for_queue(a.as_ref(), name, BOUND, "the waiter to queue", |q| q.waiters.len() == i + 1).await;
    }
    guard.release().await.unwrap_or_else(|e| panic!("{url}: release: {e}"));
    for waiter in waiters {
        let served = tokio::time::timeout(BOUND, waiter).await.expect("every waiter is served").expect("task");
        served.unwrap_or_else(|e| panic!("{url}: a waiter: {e}"));
    }
    assert_eq!(*order.lock().unwrap(), [0, 1], "{url}: the waiters are served in queue order");
}

/// Takes lock `name`, or one of `permits` of the semaphore `name`.
async fn take(client: &dyn DistributedLock, name: &str, permits: Option<u32>) -> Result<LockGuard, LockError> {
    match permits {
        Some(permits) => client.acquire_permit(name, permits).await,
        None => client.lock(name).await,
    }
}

/// Connects by `url` and takes lock `name`, expecting the server to refuse our credentials or
/// rights at one of the two steps (etcd checks a password at connect, a permission at the first
/// request; ZooKeeper checks both at the first request). The refusal must be final and name
/// `says`, what the user has to fix.
pub async fn refused(url: &str, name: &str, says: &str) {
    let outcome = match distlock::connect(url).await {
        Err(e) => Err(e),
        Ok(locks) => locks.lock(name).await.map(drop),
    };
    let Err(err) = outcome else { panic!("{url}: the server should refuse") };
    assert!(matches!(err, distlock::LockError::Unauthorized { .. }), "{url}: {err:?}");
    assert!(!err.is_retryable(), "{url}: a refusal is final: {err}");
    assert!(err.to_string().contains(says), "{url}: the error says what to fix ({says}): {err}");
}

/// Requests one client sends to take `name` and to release it, as `requests` (the client's own
/// count) reports them.
pub async fn take_and_release(locks: &dyn DistributedLock, requests: impl Fn() -> u64, name: &str) -> (u64, u64) {
    let before = requests();
    let guard = locks.lock(name).await.expect("lock");
    let taken = requests() - before;
    guard.release().await.expect("release");
    (taken, requests() - before - taken)
}
