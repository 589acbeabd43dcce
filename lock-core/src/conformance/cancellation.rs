//! Semantics 7 and 8: cancelled waits and dropped guards leave nothing behind; a lost reply
//! never makes a second entry. The lock's tests, and the same two tests over any recipe
//! ([`Take`]) that the read-write lock's and the semaphore's suites run.

use std::time::Duration;

use super::{hand_over, unique_name, wait_for_queue, within, Harness, PROMPTLY};
use crate::{DistributedLock, LockError, LockGuard};

/// Semantic 7a: A `lock()` future dropped while waiting removes its entry; later waiters are not blocked.
pub async fn dropped_lock_future_leaves_nothing(h: &dyn Harness) {
    let name = unique_name("dropped-wait");
    let holder = h.client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let quitter = h.client().await;
    let name_owned = name.clone();
    let quitting = tokio::spawn(async move { quitter.lock(&name_owned).await.map(|_| ()) });
    wait_for_queue(holder.as_ref(), &name, PROMPTLY, "the quitter to queue", |i| i.waiters.len() == 1).await;
    quitting.abort();
    let _ = quitting.await;
    wait_for_queue(holder.as_ref(), &name, PROMPTLY, "the dropped waiter's entry to go", |i| i.waiters.is_empty())
        .await;
    let next = hand_over(holder.as_ref(), &name, guard, h.client().await).await;
    next.release().await.expect("release");
}

/// Semantic 7b: Dropping a guard releases in the background.
pub async fn dropped_guard_releases_in_background(h: &dyn Harness) {
    let name = unique_name("dropped-guard");
    let a = h.client().await;
    let b = h.client().await;
    drop(a.lock(&name).await.expect("a lock"));
    let g = within(PROMPTLY, "b acquires after a's guard was dropped", b.lock(&name)).await.expect("b lock");
    g.release().await.expect("release");
}

/// Semantic 7c: A task aborted while holding a guard releases the lock.
pub async fn aborted_task_releases_its_guard(h: &dyn Harness) {
    let name = unique_name("aborted-holder");
    let a = h.client().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name_owned = name.clone();
    let holding = tokio::spawn(async move {
        let _guard = a.lock(&name_owned).await.expect("a lock");
        let _ = tx.send(());
        std::future::pending::<()>().await;
    });
    within(PROMPTLY, "the task acquires", rx).await.expect("acquired");
    holding.abort();
    let _ = holding.await;
    let b = h.client().await;
    let g = within(PROMPTLY, "b acquires after the holding task was aborted", b.lock(&name)).await.expect("b lock");
    g.release().await.expect("release");
}

/// Semantic 7c, for the release: a `release()` future dropped after its first poll (the server
/// request sent, no answer yet) still completes. The waiter behind gets the lock, and the
/// releasing client can take it again afterwards.
pub async fn dropped_release_future_still_releases(h: &dyn Harness) {
    let name = unique_name("dropped-release");
    let (a, b) = (h.client().await, h.client().await);
    let guard = a.lock(&name).await.expect("a lock");
    let waiting = tokio::spawn({
        let (b, name) = (b.clone(), name.clone());
        async move { b.lock(&name).await }
    });
    wait_for_queue(a.as_ref(), &name, PROMPTLY, "b to queue behind a", |i| i.waiters.len() == 1).await;
    let mut release = Box::pin(guard.release());
    tokio::select! {
        biased;
        released = &mut release => released.expect("a release done in its first poll"),
        () = std::future::ready(()) => {}
    }
    drop(release);
    let served = within(PROMPTLY, "b is served after a's release future was dropped", waiting).await;
    let g = served.expect("b's task").expect("b lock");
    g.release().await.expect("b releases");
    let again = within(PROMPTLY, "a locks again", a.lock(&name)).await.expect("a locks again");
    again.release().await.expect("a releases");
}

/// Semantic 7d: Waiters whose timeouts expire around the moment of a hand-off either get the lock (and
/// release it) or leave nothing behind: afterwards the lock is free.
pub async fn cancellation_at_the_moment_of_grant_leaves_nothing(h: &dyn Harness) {
    let name = unique_name("cancel-at-grant");
    let holder = h.client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let client = h.client().await;
        let name_owned = name.clone();
        tasks.push(tokio::spawn(async move {
            // Timeouts spread over 100..380 ms, around the release at ~200 ms.
            if let Some(g) =
                client.lock_timeout(&name_owned, Duration::from_millis(100 + 40 * i)).await.expect("lock_timeout")
            {
                g.release().await.expect("release");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // release in the middle of the timeouts
    guard.release().await.expect("release");
    for t in tasks {
        within(PROMPTLY, "every timed waiter finishes", t).await.expect("task");
    }
    wait_for_queue(holder.as_ref(), &name, PROMPTLY, "the lock to be free", |i| i.is_free()).await;
    let g = holder.try_lock(&name).await.expect("try_lock").expect("the lock is free after the cancellations");
    g.release().await.expect("release");
}

/// Semantic 8: A reply lost after the server queued the request: the retry finds its own entry, so each
/// client has exactly one entry, as holder and as waiter.
pub async fn lost_reply_leaves_one_entry_per_waiter(h: &dyn Harness) {
    let name = unique_name("lost-reply");
    let (a, a_faults) = h.faulty_client().await;
    // Use the lock once first: on ZooKeeper the lock directory then exists, so the create whose
    // reply is lost is one the server applied (the case protected mode is for).
    a.lock(&name).await.expect("first use").release().await.expect("release");
    a_faults.drop_next_reply().await;
    let guard = within(PROMPTLY, "a acquires despite a lost reply", a.lock(&name)).await.expect("a lock");
    assert_eq!(a_faults.dropped_replies().await, 1, "the fault was injected");
    let info = a.inspect(&name).await.expect("inspect");
    assert!(info.waiters.is_empty(), "one entry for the holder, no duplicate: {info:?}");

    let (b, b_faults) = h.faulty_client().await;
    // B meets the holder once first: where a session has not met others lately, etcd's first
    // request only asks whether the queue is empty (and writes nothing when it is not), and the
    // fault drops every reply until our entry exists. Having met others, B queues with its first
    // request, and that request's reply is the one lost.
    assert!(b.try_lock(&name).await.expect("try_lock").is_none(), "a holds");
    b_faults.drop_next_reply().await;
    let name_owned = name.clone();
    let waiting = tokio::spawn(async move { b.lock(&name_owned).await.expect("b lock") });
    let info = wait_for_queue(a.as_ref(), &name, PROMPTLY, "b to queue", |i| !i.waiters.is_empty()).await;
    within(PROMPTLY, "b's reply is lost", async {
        while b_faults.dropped_replies().await == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let info_after = a.inspect(&name).await.expect("inspect");
    assert_eq!(
        info_after.waiters.len(),
        1,
        "one entry for the waiter, no duplicate: {info_after:?} (first seen {info:?})"
    );
    guard.release().await.expect("release");
    let g = within(PROMPTLY, "b acquires", waiting).await.expect("b");
    g.release().await.expect("release");
}

/// How a test of the shared queues takes a name: a read lock, a write lock, or a permit of N.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Take {
    Read,
    Write,
    Permit(u32),
}

impl Take {
    async fn take(self, client: &dyn DistributedLock, name: &str) -> Result<LockGuard, LockError> {
        match self {
            Take::Read => client.read_lock(name).await,
            Take::Write => client.write_lock(name).await,
            Take::Permit(permits) => client.acquire_permit(name, permits).await,
        }
    }

    async fn try_take(self, client: &dyn DistributedLock, name: &str) -> Result<Option<LockGuard>, LockError> {
        match self {
            Take::Read => client.try_read_lock(name).await,
            Take::Write => client.try_write_lock(name).await,
            Take::Permit(permits) => client.try_acquire_permit(name, permits).await,
        }
    }
}

/// [`cancellation_at_the_moment_of_grant_leaves_nothing`] for a read-write lock or a semaphore:
/// `holders` (one client each) hold; eight waits taken as `waits(i)` give up at 100..380 ms,
/// around the holders' release at ~200 ms; then nothing is left and the holders' kinds are
/// free to take again.
pub(crate) async fn shared_waits_cancelled_at_grant_leave_nothing(
    h: &dyn Harness,
    base: &str,
    holders: &[Take],
    waits: impl Fn(u64) -> Take,
) {
    let name = unique_name(base);
    let mut held = Vec::new();
    for take in holders {
        let client = h.client().await;
        held.push(
            within(PROMPTLY, "a holder takes the name", take.take(client.as_ref(), &name)).await.expect("holder"),
        );
    }
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let (client, name, take) = (h.client().await, name.clone(), waits(i));
        tasks.push(tokio::spawn(async move {
            let bound = Duration::from_millis(100 + 40 * i);
            if let Ok(taken) = tokio::time::timeout(bound, take.take(client.as_ref(), &name)).await {
                taken.expect("a timed wait").release().await.expect("release");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // release in the middle of the timeouts
    for guard in held {
        guard.release().await.expect("release");
    }
    for t in tasks {
        within(PROMPTLY, "every timed waiter finishes", t).await.expect("task");
    }
    let client = h.client().await;
    wait_for_queue(client.as_ref(), &name, PROMPTLY, "the name to be free", |i| i.is_free()).await;
    let mut again = Vec::new();
    for take in holders {
        let client = h.client().await;
        let taken = take.try_take(client.as_ref(), &name).await.expect("try");
        again.push(taken.unwrap_or_else(|| panic!("{take:?} is free after the cancellations")));
    }
    for guard in again {
        guard.release().await.expect("release");
    }
}

/// [`lost_reply_leaves_one_entry_per_waiter`] for a read-write lock or a semaphore: a holder
/// taking as `holder` and a waiter taking as `waiter`, each with the reply to its queuing lost,
/// have one entry each.
pub(crate) async fn shared_lost_replies_leave_one_entry_each(h: &dyn Harness, base: &str, holder: Take, waiter: Take) {
    let name = unique_name(base);
    let (a, a_faults) = h.faulty_client().await;
    // Used once first: on ZooKeeper the directory then exists (see the lock's test).
    holder.take(a.as_ref(), &name).await.expect("first use").release().await.expect("release");
    a_faults.drop_next_reply().await;
    let guard = within(PROMPTLY, "a takes despite a lost reply", holder.take(a.as_ref(), &name)).await.expect("a");
    assert_eq!(a_faults.dropped_replies().await, 1, "the fault was injected");
    let info = a.inspect(&name).await.expect("inspect");
    assert_eq!((info.holders().count(), info.waiters.len()), (1, 0), "one entry for the holder: {info:?}");

    let (b, b_faults) = h.faulty_client().await;
    // Having met the holder, b queues with its first request, whose reply is the one lost.
    assert!(waiter.try_take(b.as_ref(), &name).await.expect("try").is_none(), "a holds");
    b_faults.drop_next_reply().await;
    let name_owned = name.clone();
    let waiting = tokio::spawn(async move { waiter.take(b.as_ref(), &name_owned).await.expect("b") });
    wait_for_queue(a.as_ref(), &name, PROMPTLY, "b to queue", |i| !i.waiters.is_empty()).await;
    within(PROMPTLY, "b's reply is lost", async {
        while b_faults.dropped_replies().await == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let info = a.inspect(&name).await.expect("inspect");
    assert_eq!((info.holders().count(), info.waiters.len()), (1, 1), "one entry for the waiter: {info:?}");
    guard.release().await.expect("release");
    within(PROMPTLY, "b takes", waiting).await.expect("b").release().await.expect("release");
}
