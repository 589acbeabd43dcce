//! Semantics 1–3: mutual exclusion, FIFO order, and a herd-free hand-off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{hand_over, unique_name, wait_for_queue, within, Harness, PROMPTLY};
use crate::{DistributedLock, FencingToken};

/// Semantic 1: Many clients loop on one lock; a shared counter detects any overlap, and the tokens of
/// successive holders strictly increase.
pub async fn mutual_exclusion_under_contention(h: &dyn Harness) {
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 8;
    let name = unique_name("exclusion");
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::<FencingToken>::new()));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = h.client().await;
        let (name, inside, overlaps, tokens) = (name.clone(), inside.clone(), overlaps.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let guard = client.lock(&name).await.expect("lock");
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokens.lock().unwrap().push(guard.fencing_token());
                // Give another holder every chance to run inside the critical section.
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.expect("release");
            }
        }));
    }
    for task in tasks {
        within(Duration::from_secs(90), "all clients finish their rounds", task).await.expect("client task");
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders were inside at once");
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), CLIENTS * ROUNDS);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens must strictly increase from holder to holder: {tokens:?}");
}

/// Semantic 1: Names are separate locks, also where one is a path below the other: holds on
/// `<name>/nightly` and `<name>/nightly/eu` neither block `<name>` nor show in its queue, a
/// waiter on `<name>` gets it when its holder releases, and the names below are free again
/// once released, whoever holds `<name>`.
pub async fn nested_names_are_separate_locks(h: &dyn Harness) {
    let parent = unique_name("nested");
    let (child, grandchild) = (format!("{parent}/nightly"), format!("{parent}/nightly/eu"));
    let (a, b, c) = (h.client().await, h.client().await, h.client().await);
    let child_guard = within(PROMPTLY, "a locks the child", a.lock(&child)).await.expect("lock the child");
    let grandchild_guard =
        within(PROMPTLY, "a locks the grandchild", a.lock(&grandchild)).await.expect("lock the grandchild");

    let parent_guard = b
        .try_lock(&parent)
        .await
        .expect("try_lock the parent")
        .expect("the parent is free while only names below it are held");
    let info = b.inspect(&parent).await.expect("inspect the parent");
    assert_eq!(info.holder.as_ref().map(|e| e.token), Some(parent_guard.fencing_token()), "{info:?}");
    assert!(info.waiters.is_empty(), "holds below the name are not in its queue: {info:?}");
    let info = b.inspect(&child).await.expect("inspect the child");
    assert_eq!(info.holder.as_ref().map(|e| e.token), Some(child_guard.fencing_token()), "{info:?}");
    assert!(info.waiters.is_empty(), "holds below the name are not in its queue: {info:?}");

    // A waiter on the parent is handed it while the names below stay held.
    let handed = hand_over(b.as_ref(), &parent, parent_guard, c).await;

    // The names below are free again once released, while the parent is held.
    child_guard.release().await.expect("release the child");
    grandchild_guard.release().await.expect("release the grandchild");
    for name in [&child, &grandchild] {
        let guard = b.try_lock(name).await.expect("try_lock").expect("free again while the parent is held");
        guard.release().await.expect("release");
    }
    handed.release().await.expect("release the parent");
}

/// Queues `count` waiters on `name` one after another (each visible in `inspect` before the
/// next starts); each records its index in `order` when it acquires, then releases.
async fn queue_waiters(
    h: &dyn Harness,
    observer: &dyn DistributedLock,
    name: &str,
    count: usize,
    order: Arc<Mutex<Vec<usize>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..count {
        let client = h.client().await;
        let (name_owned, order) = (name.to_owned(), order.clone());
        tasks.push(tokio::spawn(async move {
            let guard = client.lock(&name_owned).await.expect("waiter lock");
            order.lock().unwrap().push(i);
            guard.release().await.expect("waiter release");
        }));
        wait_for_queue(observer, name, PROMPTLY, &format!("waiter {i} to queue"), |info| info.waiters.len() == i + 1)
            .await;
    }
    tasks
}

/// Semantic 2: Waiters get the lock in the order they queued, and `inspect` lists them in that order.
pub async fn fifo_order_of_waiters(h: &dyn Harness) {
    const WAITERS: usize = 5;
    let name = unique_name("fifo");
    let holder = h.client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks = queue_waiters(h, holder.as_ref(), &name, WAITERS, order.clone()).await;
    let info = holder.inspect(&name).await.expect("inspect");
    assert_eq!(info.holder.as_ref().map(|e| e.token), Some(guard.fencing_token()));
    let queued: Vec<FencingToken> = info.waiters.iter().map(|w| w.token).collect();
    assert!(queued.windows(2).all(|w| w[0] < w[1]), "inspect lists waiters in queue order: {info:?}");
    guard.release().await.expect("release");
    for task in tasks {
        within(PROMPTLY * 2, "every waiter acquires", task).await.expect("waiter task");
    }
    assert_eq!(*order.lock().unwrap(), (0..WAITERS).collect::<Vec<_>>(), "waiters must acquire in queue order");
}

/// Semantic 3a: A release hands the lock to the first waiter only: the others stay queued, in order.
pub async fn release_wakes_only_the_next_waiter(h: &dyn Harness) {
    let name = unique_name("herd");
    let holder = h.client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let mut waiters = Vec::new();
    for i in 0..4 {
        let client = h.client().await;
        let name_owned = name.clone();
        waiters.push(tokio::spawn(async move { client.lock(&name_owned).await.expect("waiter lock") }));
        wait_for_queue(holder.as_ref(), &name, PROMPTLY, "waiter to queue", |info| info.waiters.len() == i + 1).await;
    }
    let before = holder.inspect(&name).await.expect("inspect");
    guard.release().await.expect("release");
    let first = within(PROMPTLY, "the first waiter acquires", waiters.remove(0)).await.expect("first waiter");
    assert_eq!(Some(first.fencing_token()), before.waiters.first().map(|w| w.token));
    let after = holder.inspect(&name).await.expect("inspect");
    assert_eq!(after.waiters, before.waiters[1..], "the other waiters keep their places");
    assert!(waiters.iter().all(|w| !w.is_finished()), "nobody else got the lock");
    first.release().await.expect("release");
    for w in waiters {
        within(PROMPTLY * 2, "the rest acquire in turn", async {
            w.await.expect("waiter").release().await.expect("release")
        })
        .await;
    }
}

/// Requests per hand-off for `count` queued waiters: every waiter releases right after acquiring.
async fn requests_per_handoff(h: &dyn Harness, count: usize) -> f64 {
    let name = unique_name("handoff-cost");
    let holder = h.client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks = queue_waiters(h, holder.as_ref(), &name, count, order).await;
    let before = h.requests().await;
    guard.release().await.expect("release");
    for task in tasks {
        within(PROMPTLY * 3, "all hand-offs complete", task).await.expect("waiter task");
    }
    let spent = h.requests().await - before;
    spent as f64 / count as f64
}

/// Semantic 3b: Server requests per hand-off stay constant as waiters grow: each waiter watches only its
/// predecessor, so a release costs the same with 5 or 20 waiters. (Not 1 or 2: the first waiters
/// behind a holder may be served cheaper than the rest, whose predecessors were waiting when they
/// queued; from a few waiters on, the cost per hand-off is what it is at 1,000.)
pub async fn requests_per_handoff_do_not_grow_with_waiters(h: &dyn Harness) {
    let few = requests_per_handoff(h, 5).await;
    let many = requests_per_handoff(h, 20).await;
    assert!(many <= few + 0.5, "requests per hand-off grew with waiters: {few:.2} with 5, {many:.2} with 20 (a herd)");
    assert!(
        few >= 1.0,
        "a hand-off costs at least one request ({few:.2} measured): the request counter is not counting"
    );
}
