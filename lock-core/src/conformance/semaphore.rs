//! The counting semaphore: at most N permits held, granted FIFO, each with its own token; a
//! release wakes the one waiter it admits whichever holder releases (out of order, or with a
//! waiter leaving in between: the cases a "watch the entry N places ahead" rule gets wrong); a
//! dead session's permit is freed; clients that disagree on N get a clear error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cancellation::{
    shared_lost_replies_leave_one_entry_each, shared_waits_cancelled_at_grant_leave_nothing, Take,
};
use super::{entries_become, unique_name, within, Harness, PROMPTLY};
use crate::{DistributedLock, EntryKind, FencingToken, LockError, LockGuard};

/// A permit of `name` (of `permits`) taken in a task of its own.
fn spawn_permit(client: Arc<dyn DistributedLock>, name: &str, permits: u32) -> tokio::task::JoinHandle<LockGuard> {
    let name = name.to_owned();
    tokio::spawn(async move { client.acquire_permit(&name, permits).await.expect("acquire_permit") })
}

/// Queues one waiter per client in `clients` for a permit, in order (each seen on the server
/// before the next starts), behind `already` entries.
async fn queue_in_order(
    h: &dyn Harness,
    clients: &[Arc<dyn DistributedLock>],
    name: &str,
    permits: u32,
    already: usize,
) -> Vec<tokio::task::JoinHandle<LockGuard>> {
    let mut waiting = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        waiting.push(spawn_permit(client.clone(), name, permits));
        entries_become(h, already + i + 1, "a waiter to queue").await;
    }
    waiting
}

/// All 3 permits of a semaphore can be held at once; then many clients loop on it: never more
/// than 3 inside, and every permit has a token of its own.
pub async fn at_most_n_permits_under_contention(h: &dyn Harness) {
    const PERMITS: u32 = 3;
    const CLIENTS: usize = 7;
    const ROUNDS: usize = 6;
    let name = unique_name("permits-contention");
    let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(h.client().await);
    }
    // All of the permits can be held at once.
    let mut held = Vec::new();
    for client in clients.iter().take(PERMITS as usize) {
        held.push(within(PROMPTLY, "a free permit", client.acquire_permit(&name, PERMITS)).await.expect("permit"));
    }
    for permit in held {
        permit.release().await.expect("release");
    }
    let mut tasks = Vec::new();
    for client in clients {
        let (name, inside, most, tokens) = (name.clone(), inside.clone(), most.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let permit = client.acquire_permit(&name, PERMITS).await.expect("acquire_permit");
                tokens.lock().unwrap().push(permit.fencing_token());
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                permit.release().await.expect("release");
            }
        }));
    }
    for task in tasks {
        within(Duration::from_secs(90), "all clients finish their rounds", task).await.expect("client task");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= PERMITS as usize, "{most} held permits of {PERMITS} at once");
    let mut tokens = tokens.lock().unwrap().clone();
    let all = tokens.len();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), all, "every permit has a token of its own");
}

/// Waiters get their permits in the order they queued, each with a token above those granted
/// before it.
pub async fn permits_are_granted_in_queue_order(h: &dyn Harness) {
    let name = unique_name("permits-fifo");
    let holders = [h.client().await, h.client().await];
    let mut held = Vec::new();
    for holder in &holders {
        held.push(within(PROMPTLY, "a free permit", holder.acquire_permit(&name, 2)).await.expect("permit"));
    }
    let clients = [h.client().await, h.client().await, h.client().await];
    let waiting = queue_in_order(h, &clients, &name, 2, 2).await;
    let mut granted = Vec::new();
    for waiter in waiting {
        let released = held.remove(0);
        released.release().await.expect("release");
        let permit = within(PROMPTLY, "the next waiter in queue order", waiter).await.expect("waiter");
        held.push(permit);
        granted.push(held.last().map(LockGuard::fencing_token));
    }
    assert!(granted.windows(2).all(|w| w[0] < w[1]), "granted out of queue order: {granted:?}");
    for permit in held {
        permit.release().await.expect("release");
    }
}

/// Holders release out of order: the later holder's release admits the first waiter at once
/// (a waiter watching the entry two places ahead, the earlier holder, would miss it).
pub async fn an_out_of_order_release_admits_the_first_waiter(h: &dyn Harness) {
    let name = unique_name("permits-out-of-order");
    let (a, b) = (h.client().await, h.client().await);
    let earlier = a.acquire_permit(&name, 2).await.expect("permit");
    let later = b.acquire_permit(&name, 2).await.expect("permit");
    let waiters = [h.client().await, h.client().await];
    let mut waiting = queue_in_order(h, &waiters, &name, 2, 2).await;
    later.release().await.expect("release");
    let first = within(PROMPTLY, "the later holder's release admits the first waiter", waiting.remove(0))
        .await
        .expect("waiter");
    assert!(!waiting[0].is_finished(), "the second waiter got a permit with both taken");
    earlier.release().await.expect("release");
    let second = within(PROMPTLY, "the earlier holder's release admits the second waiter", waiting.remove(0))
        .await
        .expect("waiter");
    first.release().await.expect("release");
    second.release().await.expect("release");
}

/// A waiter between leaves, and the holders release after the first waiter got in: the waiter
/// that was behind the one that left is admitted by the next release at once.
pub async fn a_waiter_leaving_between_does_not_hold_up_the_one_behind(h: &dyn Harness) {
    let name = unique_name("permits-leaving");
    let (a, b) = (h.client().await, h.client().await);
    let first_holder = a.acquire_permit(&name, 2).await.expect("permit");
    let second_holder = b.acquire_permit(&name, 2).await.expect("permit");
    let waiters = [h.client().await, h.client().await, h.client().await];
    let mut waiting = queue_in_order(h, &waiters, &name, 2, 2).await;
    let leaving = waiting.remove(1);
    leaving.abort();
    let _ = leaving.await;
    entries_become(h, 4, "the leaving waiter's entry to go").await;
    first_holder.release().await.expect("release");
    let first = within(PROMPTLY, "the first waiter gets the freed permit", waiting.remove(0)).await.expect("waiter");
    assert!(!waiting[0].is_finished(), "the last waiter got a permit with both taken");
    second_holder.release().await.expect("release");
    let last = within(PROMPTLY, "the last waiter gets the next freed permit", waiting.remove(0)).await.expect("waiter");
    first.release().await.expect("release");
    last.release().await.expect("release");
}

/// A holder's session dies: its permit is freed with it (the waiter gets in), and its guard
/// reports the loss.
pub async fn a_dead_holders_permit_is_freed(h: &dyn Harness) {
    let name = unique_name("permits-session-death");
    let (holder, faults) = h.faulty_client().await;
    let other = h.client().await;
    let held = holder.acquire_permit(&name, 2).await.expect("permit");
    let also = other.acquire_permit(&name, 2).await.expect("permit");
    let waiting = queue_in_order(h, &[h.client().await], &name, 2, 2).await;
    faults.expire_session().await;
    within(PROMPTLY, "the dead holder's guard reports the loss", held.lost()).await;
    let waiter = within(PROMPTLY, "the waiter gets the dead holder's permit", waiting.into_iter().next().expect("one"))
        .await
        .expect("waiter");
    waiter.release().await.expect("release");
    also.release().await.expect("release");
}

/// A client asking with another number of permits than the entries queued gets
/// `PermitsMismatch` and leaves nothing; a number of 0 is refused; once the old entries are
/// gone, the new number is the semaphore's.
pub async fn clients_that_disagree_on_permits_get_a_clear_error(h: &dyn Harness) {
    let name = unique_name("permits-mismatch");
    let (a, b) = (h.client().await, h.client().await);
    let held = a.acquire_permit(&name, 2).await.expect("permit");
    for result in [
        within(PROMPTLY, "acquire_permit with 3", b.acquire_permit(&name, 3)).await.map(Some),
        within(PROMPTLY, "try_acquire_permit with 3", b.try_acquire_permit(&name, 3)).await,
    ] {
        match result {
            Err(LockError::PermitsMismatch { queued: 2, asked: 3, .. }) => {}
            other => panic!("expected PermitsMismatch {{ queued: 2, asked: 3 }}, got {other:?}"),
        }
    }
    entries_become(h, 1, "nothing of the refused requests on the server").await;
    let zero = b.acquire_permit(&name, 0).await;
    assert!(matches!(zero, Err(LockError::InvalidConfig { .. })), "0 permits: {zero:?}");
    held.release().await.expect("release");
    let again = within(PROMPTLY, "3 permits once nobody uses 2", b.acquire_permit(&name, 3)).await.expect("permit");
    again.release().await.expect("release");
}

/// Requests per grant with `count` waiters queued behind 2 holders, all served in turn.
async fn requests_per_grant(h: &dyn Harness, count: usize) -> f64 {
    let name = unique_name("permits-cost");
    let (a, b) = (h.client().await, h.client().await);
    let mut held =
        vec![a.acquire_permit(&name, 2).await.expect("permit"), b.acquire_permit(&name, 2).await.expect("permit")];
    let mut clients = Vec::new();
    for _ in 0..count {
        clients.push(h.client().await);
    }
    let waiting = queue_in_order(h, &clients, &name, 2, 2).await;
    let before = h.requests().await;
    for waiter in waiting {
        held.remove(0).release().await.expect("release");
        held.push(within(PROMPTLY, "the next waiter", waiter).await.expect("waiter"));
    }
    let spent = h.requests().await - before;
    for permit in held {
        permit.release().await.expect("release");
    }
    spent as f64 / count as f64
}

/// Herd-free: the requests a grant costs stay flat as waiters grow (3 or 20), since a release
/// wakes only the waiter it admits (and that waiter the one behind it, when it is granted).
pub async fn permit_requests_per_grant_do_not_grow_with_waiters(h: &dyn Harness) {
    let few = requests_per_grant(h, 3).await;
    let many = requests_per_grant(h, 20).await;
    // The last grants of a run cost a little less (nobody behind reads), and with a member down
    // a request retried past it, or a keepalive stream reopened during the longer run, counts
    // too, hence the slack; a herd, every waiter reading on every release, would add about half
    // the waiters per grant (10 here).
    assert!(many <= few + 3.0, "requests per grant grew with waiters: {few:.2} with 3, {many:.2} with 20 (a herd)");
    assert!(few >= 1.0, "a grant costs at least one request ({few:.2} measured): the request counter is not counting");
}

/// `inspect` shows a semaphore's N permits held, each with its token and the number of
/// permits, and the waiters behind them.
pub async fn inspect_shows_each_permit_held_and_the_waiters(h: &dyn Harness) {
    let name = unique_name("sem-inspect");
    let clients = [h.client().await, h.client().await, h.client().await];
    let mut held = Vec::new();
    for client in &clients[..2] {
        held.push(within(PROMPTLY, "a permit", client.acquire_permit(&name, 2)).await.expect("a permit"));
    }
    let waiting = queue_in_order(h, &clients[2..], &name, 2, 2).await;
    let info = clients[0].inspect(&name).await.expect("inspect");
    let holders: Vec<(EntryKind, FencingToken)> = info.holders().map(|e| (e.kind, e.token)).collect();
    let expected: Vec<(EntryKind, FencingToken)> =
        held.iter().map(|g| (EntryKind::Permit(2), g.fencing_token())).collect();
    assert_eq!(holders, expected);
    assert_eq!(info.waiters.iter().map(|e| e.kind).collect::<Vec<_>>(), [EntryKind::Permit(2)]);
    for guard in held {
        guard.release().await.expect("release");
    }
    for task in waiting {
        within(PROMPTLY, "the waiter gets a permit", task).await.expect("waiter").release().await.expect("release");
    }
}

/// Permit waits given up around the moment both holders release leave nothing behind.
pub async fn permit_waits_cancelled_at_the_grant_leave_nothing(h: &dyn Harness) {
    let holders = [Take::Permit(2), Take::Permit(2)];
    shared_waits_cancelled_at_grant_leave_nothing(h, "permits-cancel-at-grant", &holders, |_| Take::Permit(2)).await;
}

/// A permit holder and a permit waiter whose queuing replies are lost have one entry each.
pub async fn lost_replies_leave_one_entry_per_permit(h: &dyn Harness) {
    shared_lost_replies_leave_one_entry_each(h, "permits-lost-reply", Take::Permit(1), Take::Permit(1)).await;
}
