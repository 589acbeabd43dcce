//! Closing a client, waits that report their progress, and listing the locks under a prefix:
//! what a program that exits (a CLI run, a cron job) and an operator rely on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{unique_name, wait_for_queue, within, Harness, PROMPTLY};
use crate::{LockError, LossReason, SessionState, WaitProgress};

/// `close()` ends the client's session on the server and returns once it is gone: its guards
/// report the loss (`ClientClosed`), its waits and every later call fail with `Closed`, and a
/// waiter of another client behind its hold gets the lock at once, not after the TTL.
pub async fn close_frees_everything_at_once(h: &dyn Harness) {
    let (held, waited) = (unique_name("close-held"), unique_name("close-waited"));
    let closing = h.client().await;
    let other = h.client().await;
    let guard = closing.lock(&held).await.expect("lock");
    let blocker = other.lock(&waited).await.expect("other's lock");
    let waiting = tokio::spawn({
        let (closing, waited) = (closing.clone(), waited.clone());
        async move { closing.lock(&waited).await.map(drop) }
    });
    wait_for_queue(other.as_ref(), &waited, PROMPTLY, "the closing client to queue", |i| i.waiters.len() == 1).await;
    let next = tokio::spawn({
        let (other, held) = (other.clone(), held.clone());
        async move { other.lock(&held).await }
    });
    wait_for_queue(other.as_ref(), &held, PROMPTLY, "the other client to queue", |i| i.waiters.len() == 1).await;

    within(PROMPTLY, "close returns", closing.close()).await.expect("close");
    // Everything of the closed client is gone when close returns: no waiting for its TTL.
    let queue = other.inspect(&waited).await.expect("inspect");
    assert!(queue.waiters.is_empty(), "the closed client's waiter is gone: {queue:?}");
    assert_eq!(guard.lost().await, LossReason::ClientClosed);
    let wait_ended = within(PROMPTLY, "the closed client's wait ends", waiting).await.expect("task");
    assert!(matches!(wait_ended, Err(LockError::Closed)), "{wait_ended:?}");
    let next = within(h.ttl() / 2, "the waiter behind the closed hold gets it before any TTL", next).await;
    let next = next.expect("task").expect("lock");
    assert_eq!(closing.session_state(), SessionState::Closed);
    assert!(matches!(closing.lock(&held).await, Err(LockError::Closed)));
    assert!(matches!(closing.try_lock(&held).await, Err(LockError::Closed)));
    assert!(matches!(closing.inspect(&held).await, Err(LockError::Closed)));
    closing.close().await.expect("closing twice is harmless");
    assert!(matches!(guard.release().await, Err(LockError::Lost { reason: LossReason::ClientClosed, .. })));
    next.release().await.expect("release");
    blocker.release().await.expect("release");
}

/// `lock_timeout` and `try_lock` that give up return only once their entry is gone: a read
/// right after shows no waiter, and the next client is served as soon as the holder releases.
pub async fn giving_up_leaves_nothing_when_it_returns(h: &dyn Harness) {
    let name = unique_name("give-up");
    let (holder, quitter) = (h.client().await, h.client().await);
    let guard = holder.lock(&name).await.expect("lock");
    assert!(quitter.lock_timeout(&name, Duration::from_millis(200)).await.expect("lock_timeout").is_none());
    let queue = holder.inspect(&name).await.expect("inspect");
    assert!(queue.waiters.is_empty(), "lock_timeout returned with its entry still queued: {queue:?}");
    assert!(quitter.try_lock(&name).await.expect("try_lock").is_none());
    let queue = holder.inspect(&name).await.expect("inspect");
    assert!(queue.waiters.is_empty(), "try_lock returned with its entry still queued: {queue:?}");
    let next = h.client().await;
    let waiting = tokio::spawn({
        let name = name.clone();
        async move { next.lock(&name).await }
    });
    wait_for_queue(holder.as_ref(), &name, PROMPTLY, "the next waiter to queue", |i| i.waiters.len() == 1).await;
    guard.release().await.expect("release");
    let got = within(h.ttl() / 2, "the next waiter is served at the release", waiting).await;
    got.expect("task").expect("lock").release().await.expect("release");
}

/// `lock_with_progress` reports `Queued` with the entry the caller will hold with (its token is
/// the hold's fencing token), then where it stands: behind the holder and the waiter before it.
pub async fn progress_reports_the_place_in_the_queue(h: &dyn Harness) {
    let name = unique_name("progress");
    let (holder, first, second) = (h.client().await, h.client().await, h.client().await);
    let guard = holder.lock(&name).await.expect("lock");
    let first_waits = tokio::spawn({
        let name = name.clone();
        async move { first.lock(&name).await }
    });
    wait_for_queue(holder.as_ref(), &name, PROMPTLY, "the first waiter to queue", |i| i.waiters.len() == 1).await;
    let steps = Arc::new(Mutex::new(Vec::new()));
    let (tx, mut placed) = tokio::sync::watch::channel(None);
    let second_waits = tokio::spawn({
        let (name, steps) = (name.clone(), steps.clone());
        async move {
            let report = move |step: WaitProgress| {
                if let WaitProgress::Waiting { ahead, .. } = &step {
                    tx.send_replace(Some(*ahead));
                }
                steps.lock().unwrap_or_else(|p| p.into_inner()).push(step);
            };
            second.lock_with_progress(&name, Duration::from_millis(100), &report).await
        }
    });
    within(PROMPTLY, "a Waiting step", placed.wait_for(|a| a.is_some())).await.expect("reported");
    assert_eq!(*placed.borrow(), Some(2), "two ahead: the holder and the first waiter");
    let own = match steps.lock().unwrap_or_else(|p| p.into_inner()).first() {
        Some(WaitProgress::Queued { entry }) => entry.clone(),
        other => panic!("the first step is Queued, not {other:?}"),
    };
    assert!(own.token > guard.fencing_token(), "a later entry has a larger token");
    guard.release().await.expect("release");
    let first = within(PROMPTLY, "the first waiter", first_waits).await.expect("task").expect("lock");
    first.release().await.expect("release");
    let second = within(PROMPTLY, "the second waiter", second_waits).await.expect("task").expect("lock");
    assert_eq!(second.fencing_token(), own.token, "the hold's token is the queued entry's");
    second.release().await.expect("release");
}

/// `inspect_all(prefix)` lists every held or awaited lock at or below the prefix, by name, and
/// nothing else; a trailing `/` leaves the prefix's own lock out; a bad prefix is refused.
pub async fn inspect_all_lists_the_locks_under_a_prefix(h: &dyn Harness) {
    let top = unique_name("all");
    let (a, b) = (h.client().await, h.client().await);
    let names = [top.clone(), format!("{top}/x"), format!("{top}/y/eu")];
    let mut guards = Vec::new();
    for name in &names {
        guards.push(a.lock(name).await.expect("lock"));
    }
    let outside = a.lock(&format!("{top}-other")).await.expect("lock");
    let waiting = tokio::spawn({
        let (b, name) = (b.clone(), names[1].clone());
        async move { b.lock(&name).await }
    });
    wait_for_queue(a.as_ref(), &names[1], PROMPTLY, "b to queue", |i| i.waiters.len() == 1).await;

    let listed = a.inspect_all(&top).await.expect("inspect_all");
    let listed_names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(listed_names, names.iter().map(String::as_str).collect::<Vec<_>>());
    for (info, guard) in listed.iter().zip(&guards) {
        assert_eq!(info.holder.as_ref().map(|e| e.token), Some(guard.fencing_token()), "{}", info.name);
    }
    assert_eq!(listed[1].waiters.len(), 1, "b waits for {}", names[1]);
    let below = a.inspect_all(&format!("{top}/")).await.expect("inspect_all");
    assert_eq!(below.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), [&names[1], &names[2]]);
    assert!(matches!(a.inspect_all("../x").await, Err(LockError::InvalidName { .. })));

    for guard in guards {
        guard.release().await.expect("release");
    }
    outside.release().await.expect("release");
    within(PROMPTLY, "b's lock", waiting).await.expect("task").expect("lock").release().await.expect("release");
}
