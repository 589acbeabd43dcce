//! Semantics 4 and 6: a dead holder's lock passes on after the TTL, and `lost()` fires before
//! anyone else could hold the lock; a short blip loses nothing; an expired waiter gets an error.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{unique_name, wait_for_queue, within, Faults, Harness, PROMPTLY};
use crate::{DistributedLock, LockError, LockGuard, LossReason, SessionState};

/// Records when the guard's lost signal fires.
fn record_loss(token: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        token.cancelled().await;
        Instant::now()
    })
}

/// A client with faults holding lock `name`, and another client's task queued behind it.
async fn held_with_a_waiter(
    h: &dyn Harness,
    name: &str,
) -> (Arc<dyn DistributedLock>, Box<dyn Faults>, LockGuard, tokio::task::JoinHandle<LockGuard>) {
    let (holder, faults) = h.faulty_client().await;
    let guard = holder.lock(name).await.expect("holder lock");
    let waiter = h.client().await;
    let name_owned = name.to_owned();
    let waiting = tokio::spawn(async move { waiter.lock(&name_owned).await.expect("waiter lock") });
    wait_for_queue(holder.as_ref(), name, PROMPTLY, "the waiter to queue", |i| i.waiters.len() == 1).await;
    (holder, faults, guard, waiting)
}

/// Semantic 4a + 6: A holder cut off from the server: its `lost()` fires, then (not before) the waiter
/// gets the lock, within the TTL plus slack, with a larger token.
pub async fn auto_release_when_holder_is_cut_off(h: &dyn Harness) {
    let name = unique_name("cut-holder");
    let (holder, faults) = h.faulty_client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let lost_at = record_loss(guard.lost_token());
    let waiter = h.client().await;
    let name_owned = name.clone();
    let waiting = tokio::spawn(async move {
        let guard = waiter.lock(&name_owned).await.expect("waiter lock");
        (Instant::now(), guard)
    });
    wait_for_queue(holder.as_ref(), &name, PROMPTLY, "the waiter to queue", |i| i.waiters.len() == 1).await;
    let cut_at = Instant::now();
    faults.cut().await;
    let bound = h.ttl() * 2 + Duration::from_secs(5);
    let (acquired_at, next) =
        within(bound, "the waiter acquires after the holder is cut off", waiting).await.expect("waiter");
    let lost_at = within(Duration::from_secs(1), "the holder learns of the loss", lost_at).await.expect("loss task");
    assert!(lost_at <= acquired_at, "lost() fired {:?} after another client acquired", lost_at - acquired_at);
    assert!(
        acquired_at - cut_at >= h.ttl() / 2,
        "the lock passed on after {:?}, too early for a TTL of {:?}",
        acquired_at - cut_at,
        h.ttl()
    );
    assert!(next.fencing_token() > guard.fencing_token());
    assert!(!guard.is_held());
    faults.heal().await;
    let released = guard.release().await;
    assert!(matches!(released, Err(LockError::Lost { .. })), "releasing a lost lock reports the loss: {released:?}");
    next.release().await.expect("release");
}

/// Semantic 4c: A release the server never confirmed (the holder cut off as it released) does
/// not leave the lock held while the holder's client lives: once the client reaches the server
/// again, the entry goes within the TTL, the waiter gets the lock, and the holder's client queues
/// for it again with one entry.
pub async fn an_unconfirmed_release_does_not_keep_the_lock(h: &dyn Harness) {
    let name = unique_name("unconfirmed-release");
    let (holder, faults, guard, waiting) = held_with_a_waiter(h, &name).await;
    faults.cut().await;
    let released = guard.release().await;
    assert!(
        matches!(released, Ok(()) | Err(LockError::ReleaseUnconfirmed { .. } | LockError::Lost { .. })),
        "a release while cut off is confirmed, unconfirmed or lost: {released:?}"
    );
    faults.heal().await;
    let bound = h.ttl() * 2 + Duration::from_secs(5);
    let next = within(bound, "the waiter acquires after an unconfirmed release", waiting).await.expect("waiter");
    let holder_again = holder.clone();
    let name_owned = name.clone();
    let again = tokio::spawn(async move { holder_again.lock(&name_owned).await.expect("the holder's client again") });
    let observer = h.client().await;
    let queued = wait_for_queue(observer.as_ref(), &name, PROMPTLY, "the old holder's client to queue again", |i| {
        i.waiters.len() == 1
    })
    .await;
    assert_eq!(queued.holder.as_ref().map(|e| e.token), Some(next.fencing_token()), "{queued:?}");
    next.release().await.expect("release");
    let last = within(PROMPTLY, "the old holder's client acquires again", again).await.expect("again");
    last.release().await.expect("release");
}

/// Semantic 4b: A holder whose session is killed on the server: the waiter gets the lock promptly.
pub async fn auto_release_when_holder_session_is_killed(h: &dyn Harness) {
    let name = unique_name("killed-holder");
    let (_holder, faults, guard, waiting) = held_with_a_waiter(h, &name).await;
    faults.expire_session().await;
    let next = within(PROMPTLY, "the waiter acquires after the holder's session ends", waiting).await.expect("waiter");
    assert!(next.fencing_token() > guard.fencing_token());
    within(PROMPTLY, "the holder's lost() fires", guard.lost()).await;
    drop(guard);
    next.release().await.expect("release");
}

/// Semantic 6a: Session expiry fires `lost()` with the reason, `is_held` turns false, the session state
/// says expired, and the next `lock` works on a new session.
pub async fn lost_fires_when_session_expires(h: &dyn Harness) {
    let name = unique_name("expiry");
    let (client, faults) = h.faulty_client().await;
    assert_eq!(client.session_state(), SessionState::Connected);
    let guard = client.lock(&name).await.expect("lock");
    assert!(guard.is_held());
    faults.expire_session().await;
    let reason = within(PROMPTLY, "lost() fires on session expiry", guard.lost()).await;
    assert_eq!(reason, LossReason::SessionExpired);
    assert!(!guard.is_held());
    assert!(guard.reenter().is_err(), "a lost hold cannot be reentered");
    assert_eq!(client.session_state(), SessionState::Expired);
    drop(guard);
    let again =
        within(PROMPTLY, "a new session takes the lock", client.lock(&name)).await.expect("lock on a new session");
    assert_eq!(client.session_state(), SessionState::Connected);
    again.release().await.expect("release");
}

/// Semantic 6b: The holder's entry deleted by someone else: `lost()` fires and the next waiter acquires.
pub async fn lost_fires_when_entry_is_deleted(h: &dyn Harness) {
    let name = unique_name("deleted");
    let holder = h.client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let waiter = h.client().await;
    let name_owned = name.clone();
    let waiting = tokio::spawn(async move { waiter.lock(&name_owned).await.expect("waiter lock") });
    wait_for_queue(holder.as_ref(), &name, PROMPTLY, "the waiter to queue", |i| i.waiters.len() == 1).await;
    h.delete_holder(&name).await;
    let reason = within(PROMPTLY, "lost() fires when the entry is deleted", guard.lost()).await;
    assert_eq!(reason, LossReason::EntryDeleted);
    let next = within(PROMPTLY, "the waiter acquires", waiting).await.expect("waiter");
    assert!(next.fencing_token() > guard.fencing_token());
    drop(guard);
    next.release().await.expect("release");
}

/// Semantic 6c: A cut shorter than the lost deadline: no loss, nobody else acquires, the lock still works.
pub async fn short_blip_loses_nothing(h: &dyn Harness) {
    let name = unique_name("blip");
    let (holder, faults) = h.faulty_client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let waiter: Arc<_> = h.client().await;
    faults.cut().await;
    tokio::time::sleep(h.ttl() / 4).await; // the length of the blip is the point of this test
    faults.heal().await;
    // Over a whole TTL after the blip, the waiter must not get the lock and nothing may be lost.
    let stolen = waiter.lock_timeout(&name, h.ttl() + h.ttl() / 2).await.expect("waiter lock_timeout");
    assert!(stolen.is_none(), "another client acquired during or after a short blip");
    assert!(guard.is_held(), "a blip shorter than the TTL must not lose the lock");
    assert_eq!(holder.session_state(), SessionState::Connected);
    guard.release().await.expect("release after the blip");
    let next = within(PROMPTLY, "the waiter acquires after release", waiter.lock(&name)).await.expect("lock");
    next.release().await.expect("release");
}

/// Semantic 4c: A waiter whose session expires while it waits gets `SessionExpired`, never a lock.
pub async fn waiter_whose_session_expires_gets_an_error(h: &dyn Harness) {
    let name = unique_name("expired-waiter");
    let holder = h.client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let (waiter, faults) = h.faulty_client().await;
    let name_owned = name.clone();
    let waiter_task = waiter.clone();
    let waiting = tokio::spawn(async move { waiter_task.lock(&name_owned).await });
    wait_for_queue(holder.as_ref(), &name, PROMPTLY, "the waiter to queue", |i| i.waiters.len() == 1).await;
    faults.expire_session().await;
    let result = within(PROMPTLY, "the waiter's lock() returns", waiting).await.expect("waiter task");
    match result {
        Err(LockError::SessionExpired { .. }) => {}
        Err(other) => panic!("expected SessionExpired, got {other}"),
        Ok(guard) => panic!("a waiter whose session expired got the lock (token {})", guard.fencing_token()),
    }
    let info = holder.inspect(&name).await.expect("inspect");
    assert!(info.waiters.is_empty(), "the expired waiter's entry is gone: {info:?}");
    guard.release().await.expect("release");
}
