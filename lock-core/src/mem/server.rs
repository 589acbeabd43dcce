//! The in-process lock server behind `mem://`: sessions with a TTL, one FIFO queue per name, a
//! global revision that orders every entry (the fencing token), the value each entry carries,
//! a notification to observers of each change of a queue's first entry, and a request counter.
//!
//! Expiry is lazy: every request first ends the sessions whose TTL ran out, and waiters sleep at
//! most until the earliest expiry ahead of them. No background task is needed, so a server
//! outlives any tokio runtime that used it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{Grant, QueueKind, Recipe};
use crate::{EntryKind, FencingToken, Leader, LockName, QueueEntry};

/// An in-process lock server. Clones share the same server; clients connected to one server
/// exclude each other exactly as clients of one etcd cluster do.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use distlock_core::{DistributedLock, mem::{MemLocks, MemServer}};
///
/// let server = MemServer::new();
/// let a = MemLocks::connect_to(&server)?;
/// let b = MemLocks::connect_to(&server)?;
/// let guard = a.lock("x").await?;
/// assert!(b.try_lock("x").await?.is_none());
/// # drop(guard); Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemServer {
    inner: Arc<ServerInner>,
}

#[derive(Debug, Default)]
struct ServerInner {
    state: Mutex<ServerState>,
    requests: AtomicU64,
}

#[derive(Debug, Default)]
struct ServerState {
    revision: u64,
    next_session: u64,
    sessions: HashMap<u64, SessionRecord>,
    queues: HashMap<QueueId, VecDeque<Entry>>,
    /// Observers of each name's first entry: told of every change of it or of its value.
    observers: HashMap<QueueId, broadcast::Sender<Option<Leader>>>,
}

/// How many changes an observer may fall behind before it re-reads the leader.
const OBSERVER_BACKLOG: usize = 1024;

#[derive(Debug)]
struct SessionRecord {
    ttl: Duration,
    expires_at: Instant,
    ended: CancellationToken,
}

/// Which queue of a name: the lock's and the election's (one queue, as on etcd), the
/// read-write lock's (readers and writers together), or the semaphore's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct QueueId {
    name: LockName,
    kind: QueueKind,
}

impl QueueId {
    /// The queue that entries of `recipe` for `name` join.
    pub(crate) fn of(name: &LockName, recipe: Recipe) -> Self {
        QueueId { name: name.clone(), kind: recipe.queue_kind() }
    }

    /// The queue's name in a session's pending cleanups.
    pub(crate) fn label(&self) -> String {
        format!("{}#{:?}", self.name, self.kind)
    }

    /// The queue of the lock (and election) `name`.
    fn lock(name: &LockName) -> Self {
        QueueId::of(name, Recipe::Lock)
    }
}

#[derive(Debug)]
struct Entry {
    session: u64,
    token: FencingToken,
    /// What the entry holds or waits for (its grant rule).
    kind: EntryKind,
    value: Vec<u8>,
    since: SystemTime,
    wake: Arc<Notify>,
    deleted: CancellationToken,
}

/// A session's place in a queue, as the server answers an enqueue.
#[derive(Debug, Clone)]
pub(crate) struct Enqueued {
    pub(crate) token: FencingToken,
    /// Notified when this entry becomes first in line (herd-free: only that entry is woken).
    pub(crate) wake: Arc<Notify>,
    /// Cancelled when someone other than the owner deletes the entry.
    pub(crate) deleted: CancellationToken,
}

/// The session is gone on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionGone;

/// Why the server refused to queue an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The session is gone.
    SessionGone,
    /// The semaphore's entries carry this other number of permits.
    PermitsMismatch(u32),
}

impl MemServer {
    /// A new, empty server.
    ///
    /// ```
    /// assert_eq!(distlock_core::mem::MemServer::new().entry_count(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide server named `name`, created on first use. `mem://` is the server
    /// named `""`; `mem://orders` the one named `orders`.
    ///
    /// ```
    /// use distlock_core::mem::MemServer;
    /// assert!(MemServer::named("a").same_server(&MemServer::named("a")));
    /// assert!(!MemServer::named("a").same_server(&MemServer::named("b")));
    /// ```
    pub fn named(name: &str) -> Self {
        static SERVERS: OnceLock<Mutex<HashMap<String, MemServer>>> = OnceLock::new();
        let servers = SERVERS.get_or_init(Default::default);
        let mut servers = servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.entry(name.to_owned()).or_default().clone()
    }

    /// Whether two handles point at the same server.
    ///
    /// ```
    /// let s = distlock_core::mem::MemServer::new();
    /// assert!(s.same_server(&s.clone()));
    /// ```
    pub fn same_server(&self, other: &MemServer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Requests served so far, keepalives excluded: the figure to count round trips with.
    ///
    /// ```
    /// assert_eq!(distlock_core::mem::MemServer::new().requests(), 0);
    /// ```
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// How many queue entries (holders and waiters) exist on the whole server.
    ///
    /// ```
    /// assert_eq!(distlock_core::mem::MemServer::new().entry_count(), 0);
    /// ```
    pub fn entry_count(&self) -> usize {
        let mut state = self.state();
        state.sweep(Instant::now());
        state.queues.values().map(VecDeque::len).sum()
    }

    /// Deletes the current holder's entry of `name`, as an operator with `etcdctl del` would.
    /// Returns the deleted entry's token. The holder's guard reports the loss.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, LockName, mem::{MemLocks, MemServer}};
    /// let server = MemServer::new();
    /// let guard = MemLocks::connect_to(&server)?.lock("x").await?;
    /// assert_eq!(server.delete_holder(&LockName::new("x")?), Some(guard.fencing_token()));
    /// guard.lost().await;
    /// # Ok(()) }
    /// ```
    pub fn delete_holder(&self, name: &LockName) -> Option<FencingToken> {
        let mut state = self.state();
        state.sweep(Instant::now());
        let queue_id = QueueId::lock(name);
        let queue = state.queues.get_mut(&queue_id)?;
        let entry = queue.pop_front()?;
        entry.deleted.cancel();
        state.after_removal(&queue_id, true);
        Some(entry.token)
    }

    /// Ends session `id` on the server now, as Curator's `KillSession` does: its entries are
    /// removed and its client learns that the session expired. Returns whether it was alive.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::mem::{MemLocks, MemServer};
    /// let server = MemServer::new();
    /// let locks = MemLocks::connect_to(&server)?;
    /// assert!(server.expire_session(locks.backend().session_id()));
    /// # Ok(()) }
    /// ```
    pub fn expire_session(&self, id: u64) -> bool {
        let mut state = self.state();
        state.sweep(Instant::now());
        state.end_session(id)
    }

    fn state(&self) -> MutexGuard<'_, ServerState> {
        // Each critical section leaves the state consistent before any call that could panic.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        crate::metrics::server_request("mem");
    }

    pub(crate) fn open_session(&self, ttl: Duration) -> (u64, CancellationToken) {
        self.count();
        let mut state = self.state();
        state.sweep(Instant::now());
        state.next_session += 1;
        let id = state.next_session;
        let ended = CancellationToken::new();
        state.sessions.insert(id, SessionRecord { ttl, expires_at: Instant::now() + ttl, ended: ended.clone() });
        (id, ended)
    }

    pub(crate) fn close_session(&self, id: u64) {
        self.count();
        let mut state = self.state();
        state.end_session(id);
    }

    /// Renews the session. Keepalives are not counted as requests.
    pub(crate) fn keep_alive(&self, id: u64) -> Result<(), SessionGone> {
        let mut state = self.state();
        let now = Instant::now();
        state.sweep(now);
        let record = state.sessions.get_mut(&id).ok_or(SessionGone)?;
        record.expires_at = now + record.ttl;
        Ok(())
    }

    /// Queues session `id` for `name` with an entry of `recipe`, or returns its existing entry:
    /// a retried enqueue never makes a second entry.
    pub(crate) fn enqueue(&self, id: u64, name: &LockName, recipe: Recipe, value: &[u8]) -> Result<Enqueued, Refused> {
        self.count();
        let mut state = self.state();
        state.sweep(Instant::now());
        if !state.sessions.contains_key(&id) {
            return Err(Refused::SessionGone);
        }
        let queue_id = QueueId::of(name, recipe);
        if let Some(existing) = state.queues.get(&queue_id).and_then(|q| q.iter().find(|e| e.session == id)) {
            return Ok(existing.enqueued());
        }
        let kind = recipe.entry_kind();
        if let Some(other) =
            state.queues.get(&queue_id).and_then(|q| q.iter().find(|e| e.permits() != permits_of(kind)))
        {
            return Err(Refused::PermitsMismatch(other.permits().unwrap_or_default()));
        }
        state.revision += 1;
        let entry = Entry {
            session: id,
            token: FencingToken::new(state.revision),
            kind,
            value: value.to_vec(),
            since: SystemTime::now(),
            wake: Arc::default(),
            deleted: CancellationToken::new(),
        };
        let enqueued = entry.enqueued();
        let queue = state.queues.entry(queue_id.clone()).or_default();
        queue.push_back(entry);
        if queue.len() == 1 {
            state.publish(&queue_id);
        }
        Ok(enqueued)
    }

    /// Replaces the value of the entry with exactly this token (fenced); `false` if it is gone.
    pub(crate) fn set_value(&self, name: &LockName, token: FencingToken, value: &[u8]) -> bool {
        self.count();
        let mut state = self.state();
        state.sweep(Instant::now());
        let queue_id = QueueId::lock(name);
        let Some(queue) = state.queues.get_mut(&queue_id) else { return false };
        let Some(index) = queue.iter().position(|e| e.token == token) else { return false };
        if let Some(entry) = queue.get_mut(index) {
            entry.value = value.to_vec();
        }
        if index == 0 {
            state.publish(&queue_id);
        }
        true
    }

    /// The first entry of `name`'s queue as a leader, if any.
    pub(crate) fn leader(&self, name: &LockName) -> Option<Leader> {
        self.count();
        let mut state = self.state();
        state.sweep(Instant::now());
        state.leader(&QueueId::lock(name))
    }

    /// The leader of `name` now and a receiver of every later change, read atomically.
    pub(crate) fn observe(&self, name: &LockName) -> (Option<Leader>, broadcast::Receiver<Option<Leader>>) {
        self.count();
        let mut state = self.state();
        state.sweep(Instant::now());
        let queue_id = QueueId::lock(name);
        let receiver = state
            .observers
            .entry(queue_id.clone())
            .or_insert_with(|| broadcast::channel(OBSERVER_BACKLOG).0)
            .subscribe();
        (state.leader(&queue_id), receiver)
    }

    /// What the entry's grant rule says of the entries ahead of it, or `None` if it is gone.
    /// `counted` says whether this read is a request of its own (a re-read after a wake-up) or
    /// part of an earlier one.
    pub(crate) fn grant(&self, queue: &QueueId, token: FencingToken, recipe: Recipe, counted: bool) -> Option<Grant> {
        if counted {
            self.count();
        }
        let mut state = self.state();
        state.sweep(Instant::now());
        let entries = state.queues.get(queue)?;
        let position = entries.iter().position(|e| e.token == token)?;
        let ahead: Vec<bool> = entries.iter().take(position).map(Entry::exclusive).collect();
        Some(recipe.grant_rule().decide(&ahead, |exclusive| *exclusive))
    }

    /// When the earliest session ahead of `token` in `name`'s queue expires, if it stops
    /// renewing: a waiter must look again then.
    pub(crate) fn next_expiry_ahead(&self, queue: &QueueId, token: FencingToken) -> Option<Instant> {
        let state = self.state();
        let queue = state.queues.get(queue)?;
        queue
            .iter()
            .take_while(|e| e.token != token)
            .filter_map(|e| state.sessions.get(&e.session).map(|s| s.expires_at))
            .min()
    }

    /// Deletes the entry with exactly this token (a fenced delete: it can never remove a newer
    /// entry). Returns whether it existed.
    pub(crate) fn remove(&self, queue_id: &QueueId, token: FencingToken) -> bool {
        self.count();
        let mut state = self.state();
        state.sweep(Instant::now());
        let Some(queue) = state.queues.get_mut(queue_id) else { return false };
        let Some(index) = queue.iter().position(|e| e.token == token) else { return false };
        queue.remove(index);
        state.after_removal(queue_id, index == 0);
        true
    }

    /// Each queue of `name` (lock, read-write, semaphore: [`QueueKind::ALL`]'s order), each
    /// holder first.
    pub(crate) fn snapshot(&self, name: &LockName) -> Vec<Vec<QueueEntry>> {
        self.count();
        let mut state = self.state();
        state.sweep(Instant::now());
        QueueKind::ALL
            .iter()
            .map(|&kind| QueueId { name: name.clone(), kind })
            .map(|id| state.queues.get(&id).map(|q| q.iter().map(Entry::listed).collect()).unwrap_or_default())
            .collect()
    }

    /// The queues of every lock named `under` or below it (all with `None`), each holder first,
    /// by name and, for one name, in [`QueueKind::ALL`]'s order.
    pub(crate) fn snapshot_all(&self, under: Option<&LockName>) -> Vec<(LockName, Vec<QueueEntry>)> {
        self.count();
        let mut state = self.state();
        state.sweep(Instant::now());
        let is_under = |name: &LockName| {
            under.is_none_or(|dir| {
                let rest = name.as_str().strip_prefix(dir.as_str());
                rest.is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        };
        let kind_order = |kind: &QueueKind| QueueKind::ALL.iter().position(|k| k == kind);
        let mut queues: Vec<_> =
            state.queues.iter().filter(|(id, queue)| !queue.is_empty() && is_under(&id.name)).collect();
        queues.sort_by_key(|(id, _)| (id.name.as_str(), kind_order(&id.kind)));
        queues.into_iter().map(|(id, queue)| (id.name.clone(), queue.iter().map(Entry::listed).collect())).collect()
    }
}

impl Entry {
    /// This entry as `inspect` lists it; `owner` names the session.
    fn listed(&self) -> QueueEntry {
        QueueEntry { owner: owner_of(self.session), token: self.token, since: Some(self.since), kind: self.kind }
    }

    /// Whether the entry excludes all behind it while it holds (all but a reader's and a permit's).
    fn exclusive(&self) -> bool {
        matches!(self.kind, EntryKind::Exclusive | EntryKind::Write)
    }

    /// A permit's number of permits.
    fn permits(&self) -> Option<u32> {
        permits_of(self.kind)
    }
}

/// The number of permits of a permit's entry.
fn permits_of(kind: EntryKind) -> Option<u32> {
    match kind {
        EntryKind::Permit(permits) => Some(permits),
        _ => None,
    }
}

/// How a session's entries are listed.
pub(crate) fn owner_of(session: u64) -> String {
    format!("session-{session}")
}

impl Entry {
    fn leader(&self) -> Leader {
        Leader { value: String::from_utf8_lossy(&self.value).into_owned(), term: self.token }
    }

    fn enqueued(&self) -> Enqueued {
        Enqueued { token: self.token, wake: self.wake.clone(), deleted: self.deleted.clone() }
    }
}

impl ServerState {
    /// Ends every session whose TTL ran out.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<u64> = self.sessions.iter().filter(|(_, s)| s.expires_at <= now).map(|(id, _)| *id).collect();
        for id in expired {
            tracing::debug!(session = id, "mem server: session TTL ran out");
            self.end_session(id);
        }
    }

    fn end_session(&mut self, id: u64) -> bool {
        let Some(record) = self.sessions.remove(&id) else { return false };
        record.ended.cancel();
        let queue_ids: Vec<QueueId> = self.queues.keys().cloned().collect();
        for queue_id in queue_ids {
            let Some(queue) = self.queues.get_mut(&queue_id) else { continue };
            let head_before = queue.front().map(|e| e.token);
            let len_before = queue.len();
            queue.retain(|e| e.session != id);
            let head_changed = queue.front().map(|e| e.token) != head_before;
            if queue.len() != len_before {
                self.after_removal(&queue_id, head_changed);
            }
        }
        true
    }

    fn leader(&self, queue: &QueueId) -> Option<Leader> {
        self.queues.get(queue).and_then(|q| q.front()).map(Entry::leader)
    }

    /// Tells the queue's observers its current leader; forgets the channel once nobody listens.
    fn publish(&mut self, queue: &QueueId) {
        let leader = self.leader(queue);
        if let Some(observers) = self.observers.get(queue) {
            if observers.send(leader).is_err() {
                self.observers.remove(queue);
            }
        }
    }

    /// After an entry left a queue: wakes the entries the removal may have granted (only those:
    /// no herd) and tells the observers of a new head, and forgets empty queues. In a lock's
    /// queue that is the new head; in a read-write lock's, the head and, when it is a reader,
    /// the readers behind it up to the first writer; in a semaphore's, the entries within the
    /// permits.
    fn after_removal(&mut self, queue_id: &QueueId, head_changed: bool) {
        if head_changed {
            self.publish(queue_id);
        }
        match self.queues.get(queue_id) {
            Some(queue) if queue.is_empty() => {
                self.queues.remove(queue_id);
            }
            Some(queue) if queue_id.kind == QueueKind::Semaphore => {
                // The holders, one of which may just have been admitted.
                let permits = queue.front().and_then(Entry::permits).unwrap_or(1) as usize;
                for entry in queue.iter().take(permits) {
                    entry.wake.notify_one();
                }
            }
            Some(queue) if queue_id.kind == QueueKind::ReadWrite => {
                let mut granted = queue.iter().enumerate().take_while(|(i, e)| *i == 0 || !e.exclusive());
                if let Some((_, head)) = granted.next() {
                    let readers_too = !head.exclusive();
                    head.wake.notify_one();
                    for (_, reader) in granted.filter(|_| readers_too) {
                        reader.wake.notify_one();
                    }
                }
            }
            Some(queue) if head_changed => {
                if let Some(head) = queue.front() {
                    head.wake.notify_one();
                }
            }
            _ => {}
        }
    }
}
