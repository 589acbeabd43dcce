//! The read-write lock: readers share, a writer excludes everyone, readers and writers queue FIFO
//! together (neither side starves), a writer's release wakes exactly the readers it admits,
//! tokens grow across both sides, no silent upgrade or downgrade, and a dead session's reader or
//! writer frees its place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cancellation::{
    shared_lost_replies_leave_one_entry_each, shared_waits_cancelled_at_grant_leave_nothing, Take,
};
use super::{entries_become, unique_name, wait_for_queue, within, Harness, PROMPTLY};
use crate::{DistributedLock, EntryKind, FencingToken, LockError, LockGuard};

/// A read (`shared`) or write lock taken in a task of its own.
fn spawn_lock(client: Arc<dyn DistributedLock>, name: &str, shared: bool) -> tokio::task::JoinHandle<LockGuard> {
    let name = name.to_owned();
    tokio::spawn(async move {
        match shared {
            true => client.read_lock(&name).await.expect("read_lock"),
            false => client.write_lock(&name).await.expect("write_lock"),
        }
    })
}

/// Readers hold together; a writer gets in only once none holds, and then alone.
pub async fn readers_share_and_a_writer_excludes_everyone(h: &dyn Harness) {
    let name = unique_name("rw-share");
    let (a, b, c) = (h.client().await, h.client().await, h.client().await);
    let first = within(PROMPTLY, "a reads", a.read_lock(&name)).await.expect("a reads");
    let second = within(PROMPTLY, "b reads beside a", b.read_lock(&name)).await.expect("b reads beside a");
    assert!(c.try_write_lock(&name).await.expect("try_write_lock").is_none(), "a writer while two read");
    assert!(second.fencing_token() > first.fencing_token());
    let writing = spawn_lock(c.clone(), &name, false);
    entries_become(h, 3, "the writer to queue behind the readers").await;
    first.release().await.expect("release");
    assert!(!writing.is_finished(), "the writer got in while b still reads");
    second.release().await.expect("release");
    let writer = within(PROMPTLY, "the writer gets in once no reader holds", writing).await.expect("writer");
    assert!(a.try_read_lock(&name).await.expect("try_read_lock").is_none(), "a reader while a writer holds");
    assert!(b.try_write_lock(&name).await.expect("try_write_lock").is_none(), "a second writer");
    writer.release().await.expect("release");
}

/// Many clients read and write one name at once: no writer is ever inside with anyone, readers
/// are inside together, and every hold's token is distinct.
pub async fn read_write_exclusion_under_contention(h: &dyn Harness) {
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 6;
    let name = unique_name("rw-contention");
    let (readers, writers, overlaps, most_readers) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let client = h.client().await;
        let (name, readers, writers, overlaps, most_readers, tokens) =
            (name.clone(), readers.clone(), writers.clone(), overlaps.clone(), most_readers.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let shared = (i + round) % 3 != 0;
                let guard = match shared {
                    true => client.read_lock(&name).await.expect("read_lock"),
                    false => client.write_lock(&name).await.expect("write_lock"),
                };
                tokens.lock().unwrap().push(guard.fencing_token());
                if shared {
                    let now = readers.fetch_add(1, Ordering::SeqCst) + 1;
                    most_readers.fetch_max(now, Ordering::SeqCst);
                    if writers.load(Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                } else if writers.fetch_add(1, Ordering::SeqCst) != 0 || readers.load(Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                // Long enough for the other readers queued alongside to get in too.
                tokio::time::sleep(Duration::from_millis(20)).await;
                match shared {
                    true => readers.fetch_sub(1, Ordering::SeqCst),
                    false => writers.fetch_sub(1, Ordering::SeqCst),
                };
                guard.release().await.expect("release");
            }
        }));
    }
    for task in tasks {
        within(Duration::from_secs(90), "all clients finish their rounds", task).await.expect("client task");
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "a writer was inside with someone else");
    assert!(most_readers.load(Ordering::SeqCst) > 1, "readers never held together");
    let mut tokens = tokens.lock().unwrap().clone();
    let all = tokens.len();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), all, "every hold has a token of its own");
}

/// FIFO across kinds: a reader that arrives behind a waiting writer waits for that writer (the
/// writer does not starve), and the writer's release admits exactly the readers up to the next
/// writer, whose tokens are above the writer's.
pub async fn readers_behind_a_waiting_writer_wait_for_it(h: &dyn Harness) {
    let name = unique_name("rw-fifo");
    let clients: Vec<Arc<dyn DistributedLock>> =
        vec![h.client().await, h.client().await, h.client().await, h.client().await, h.client().await];
    let holder = within(PROMPTLY, "a reads", clients[0].read_lock(&name)).await.expect("a reads");
    let first_writer = spawn_lock(clients[1].clone(), &name, false);
    entries_become(h, 2, "the first writer to queue").await;
    assert!(
        clients[2].try_read_lock(&name).await.expect("try_read_lock").is_none(),
        "a reader jumped a waiting writer"
    );
    let readers = [spawn_lock(clients[2].clone(), &name, true), spawn_lock(clients[3].clone(), &name, true)];
    entries_become(h, 4, "two readers to queue behind the writer").await;
    let second_writer = spawn_lock(clients[4].clone(), &name, false);
    entries_become(h, 5, "the second writer to queue").await;
    assert!(readers.iter().all(|r| !r.is_finished()), "a reader got in ahead of the waiting writer");

    holder.release().await.expect("release");
    let writer = within(PROMPTLY, "the first writer gets in", first_writer).await.expect("writer");
    assert!(readers.iter().all(|r| !r.is_finished()), "a reader got in beside the writer");
    let token = writer.fencing_token();
    writer.release().await.expect("release");
    let mut admitted = Vec::new();
    for reader in readers {
        admitted.push(within(PROMPTLY, "the writer's release admits both readers", reader).await.expect("reader"));
    }
    assert!(admitted.iter().all(|r| r.fencing_token() > token), "readers' tokens are above the writer's");
    assert!(!second_writer.is_finished(), "the second writer got in beside readers");
    for reader in admitted {
        reader.release().await.expect("release");
    }
    let last = within(PROMPTLY, "the second writer gets in", second_writer).await.expect("writer");
    last.release().await.expect("release");
}

/// No silent upgrade or downgrade: a client holding one side of a name is refused the other
/// side at once (it would wait for its own hold), and nothing is queued for it; the lock and
/// the semaphore of that name it takes beside it.
pub async fn asking_for_the_other_side_of_a_held_name_is_an_error(h: &dyn Harness) {
    let name = unique_name("rw-upgrade");
    let client = h.client().await;
    let reading = client.read_lock(&name).await.expect("read_lock");
    for result in [
        within(PROMPTLY, "write_lock while reading", client.write_lock(&name)).await.map(Some),
        within(PROMPTLY, "try_write_lock while reading", client.try_write_lock(&name)).await,
    ] {
        assert!(matches!(result, Err(LockError::WouldWaitForItself { .. })), "upgrade: {result:?}");
    }
    entries_become(h, 1, "only the read hold on the server").await;
    // The lock and the semaphore of the same name are other queues, locally too.
    let lock = within(PROMPTLY, "the lock of the name while reading it", client.lock(&name)).await.expect("lock");
    let permit = within(PROMPTLY, "a permit of the name", client.acquire_permit(&name, 1)).await.expect("permit");
    lock.release().await.expect("release");
    permit.release().await.expect("release");
    reading.release().await.expect("release");
    let writing = client.write_lock(&name).await.expect("write_lock once the read is released");
    let result = within(PROMPTLY, "read_lock while writing", client.read_lock(&name)).await;
    assert!(matches!(result, Err(LockError::WouldWaitForItself { .. })), "downgrade: {result:?}");
    writing.release().await.expect("release");
}

/// Session death frees a reader's and a writer's place: a writer waiting behind a reader whose
/// session is killed gets in, and so does a reader waiting behind that writer once its session
/// is killed; each dead holder's guard reports the loss.
pub async fn a_dead_readers_or_writers_place_is_freed(h: &dyn Harness) {
    let name = unique_name("rw-session-death");
    let (reader, reader_faults) = h.faulty_client().await;
    let (writer, writer_faults) = h.faulty_client().await;
    let late_reader = h.client().await;
    let reading = reader.read_lock(&name).await.expect("read_lock");
    let writing = spawn_lock(writer.clone(), &name, false);
    entries_become(h, 2, "the writer to queue behind the reader").await;
    reader_faults.expire_session().await;
    within(PROMPTLY, "the dead reader's guard reports the loss", reading.lost()).await;
    let writing =
        within(PROMPTLY, "the writer gets in after the reader's session died", writing).await.expect("writer");
    let late = spawn_lock(late_reader.clone(), &name, true);
    entries_become(h, 2, "a reader to queue behind the writer").await;
    writer_faults.expire_session().await;
    within(PROMPTLY, "the dead writer's guard reports the loss", writing.lost()).await;
    let late = within(PROMPTLY, "the reader gets in after the writer's session died", late).await.expect("reader");
    late.release().await.expect("release");
}

/// A writer's wait dropped while readers queue behind it: its entry goes, and those readers get
/// in beside the reader holding, with no release.
pub async fn a_dropped_writer_wait_lets_the_readers_behind_it_in(h: &dyn Harness) {
    let name = unique_name("rw-dropped-writer");
    let (a, b, c) = (h.client().await, h.client().await, h.client().await);
    let holding = a.read_lock(&name).await.expect("read_lock");
    let writer = spawn_lock(b.clone(), &name, false);
    entries_become(h, 2, "the writer to queue").await;
    let reader = spawn_lock(c.clone(), &name, true);
    entries_become(h, 3, "a reader to queue behind the writer").await;
    writer.abort();
    let _ = writer.await;
    let reader = within(PROMPTLY, "the reader gets in once the writer's entry is gone", reader).await.expect("reader");
    reader.release().await.expect("release");
    holding.release().await.expect("release");
}

/// `inspect` shows a read-write lock's readers holding together and the writer behind them
/// waiting, each entry with its kind and token.
pub async fn inspect_shows_the_readers_holding_and_the_writer_waiting(h: &dyn Harness) {
    let name = unique_name("rw-inspect");
    let (a, b, c) = (h.client().await, h.client().await, h.client().await);
    let first = within(PROMPTLY, "a reads", a.read_lock(&name)).await.expect("a reads");
    let second = within(PROMPTLY, "b reads", b.read_lock(&name)).await.expect("b reads");
    let writing = spawn_lock(c.clone(), &name, false);
    entries_become(h, 3, "the writer to queue behind the readers").await;
    // As a's server has it (on ZooKeeper, a's server may apply the writer's queuing a moment
    // after the harness's did: see `election::leader_becomes`).
    let info = wait_for_queue(a.as_ref(), &name, PROMPTLY, "a to see the writer queued", |i| {
        i.holders().count() + i.waiters.len() == 3
    })
    .await;
    let holders: Vec<(EntryKind, FencingToken)> = info.holders().map(|e| (e.kind, e.token)).collect();
    assert_eq!(holders, [(EntryKind::Read, first.fencing_token()), (EntryKind::Read, second.fencing_token())]);
    assert_eq!(info.waiters.iter().map(|e| e.kind).collect::<Vec<_>>(), [EntryKind::Write]);
    assert!(info.waiters[0].token > second.fencing_token(), "the writer's token comes after the readers'");
    first.release().await.expect("release");
    second.release().await.expect("release");
    let writer = within(PROMPTLY, "the writer gets in", writing).await.expect("writer");
    // As a's server has it, which may apply the readers' releases a moment after the writer's
    // server did (as above).
    let info = wait_for_queue(a.as_ref(), &name, PROMPTLY, "a to see the writer alone", |i| {
        i.holders().count() == 1 && i.waiters.is_empty()
    })
    .await;
    assert_eq!(info.holder.as_ref().map(|e| (e.kind, e.token)), Some((EntryKind::Write, writer.fencing_token())));
    assert!(info.also_holding.is_empty() && info.waiters.is_empty());
    writer.release().await.expect("release");
}

/// Read and write waits given up around the moment a writer releases leave nothing behind.
pub async fn read_and_write_waits_cancelled_at_the_grant_leave_nothing(h: &dyn Harness) {
    let waits = |i| if i % 2 == 0 { Take::Read } else { Take::Write };
    shared_waits_cancelled_at_grant_leave_nothing(h, "rw-cancel-at-grant", &[Take::Write], waits).await;
}

/// A reader and a writer whose queuing replies are lost have one entry each.
pub async fn lost_replies_leave_one_entry_per_reader_and_writer(h: &dyn Harness) {
    shared_lost_replies_leave_one_entry_each(h, "rw-lost-reply", Take::Read, Take::Write).await;
}
