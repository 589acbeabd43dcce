//! What `inspect` reports: the holders and the waiters of one queue (a lock's, a read-write
//! lock's, a semaphore's), in queue order, each entry with its kind.

use std::time::SystemTime;

use crate::{FencingToken, LockName};

/// What a queue entry holds or waits for.
///
/// ```
/// use distlock_core::EntryKind;
/// assert_eq!(EntryKind::Permit(4).to_string(), "permit of 4");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A lock's or an election's entry: it holds alone.
    Exclusive,
    /// A reader of a read-write lock: it holds beside the readers next to it.
    Read,
    /// A writer of a read-write lock: it holds alone.
    Write,
    /// A permit of a semaphore of this many permits: the first that many entries hold.
    Permit(u32),
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryKind::Exclusive => f.write_str("lock"),
            EntryKind::Read => f.write_str("read"),
            EntryKind::Write => f.write_str("write"),
            EntryKind::Permit(permits) => write!(f, "permit of {permits}"),
        }
    }
}

/// One place in a server-side queue.
///
/// ```
/// use distlock_core::{EntryKind, FencingToken, QueueEntry};
/// let entry = QueueEntry { owner: "session-1".into(), token: FencingToken::new(3), since: None, kind: EntryKind::Exclusive };
/// assert_eq!(entry.token.get(), 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    /// Who queued: the etcd key, the znode name, or the `mem://` session.
    pub owner: String,
    /// The fencing token this entry has (or will have) as holder.
    pub token: FencingToken,
    /// When the entry was created, where the server records it (ZooKeeper, `mem://`).
    pub since: Option<SystemTime>,
    /// What it holds or waits for.
    pub kind: EntryKind,
}

impl QueueEntry {
    /// How long ago the entry was created, where the server records it (`None` on etcd).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use distlock_core::{EntryKind, FencingToken, QueueEntry};
    /// let since = SystemTime::now() - Duration::from_secs(5);
    /// let entry = QueueEntry { owner: "s".into(), token: FencingToken::new(1), since: Some(since), kind: EntryKind::Exclusive };
    /// assert!(entry.age().is_some_and(|age| age >= Duration::from_secs(5)));
    /// ```
    pub fn age(&self) -> Option<std::time::Duration> {
        self.since.and_then(|since| SystemTime::now().duration_since(since).ok())
    }
}

/// The holders and the waiters of one queue, in queue order: a lock's (or an election's), a
/// read-write lock's or a semaphore's.
///
/// ```
/// use distlock_core::{LockInfo, LockName};
/// let info = LockInfo { name: LockName::new("a")?, holder: None, also_holding: vec![], waiters: vec![] };
/// assert!(info.is_free());
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The name.
    pub name: LockName,
    /// The first holder, if any: the only one of a lock, an election or a writer.
    pub holder: Option<QueueEntry>,
    /// The holders beside the first: readers next to a reader, the other permits of a
    /// semaphore. Empty for a lock.
    pub also_holding: Vec<QueueEntry>,
    /// The waiters, first in line first.
    pub waiters: Vec<QueueEntry>,
}

impl LockInfo {
    /// Whether nobody holds or waits for the lock.
    ///
    /// ```
    /// use distlock_core::{LockInfo, LockName};
    /// assert!(LockInfo::from_queue(LockName::new("a")?, vec![]).is_free());
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn is_free(&self) -> bool {
        self.holder.is_none() && self.waiters.is_empty()
    }

    /// Every holder, in queue order.
    ///
    /// ```
    /// use distlock_core::{EntryKind, FencingToken, LockInfo, LockName, QueueEntry};
    /// let read = |t| QueueEntry { owner: format!("s{t}"), token: FencingToken::new(t), since: None, kind: EntryKind::Read };
    /// let info = LockInfo::from_queue(LockName::new("a")?, vec![read(1), read(2)]);
    /// assert_eq!(info.holders().count(), 2);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn holders(&self) -> impl Iterator<Item = &QueueEntry> {
        self.holder.iter().chain(&self.also_holding)
    }

    /// What the queue is of: its first entry's kind (`None`: free).
    ///
    /// ```
    /// use distlock_core::{LockInfo, LockName};
    /// let info = LockInfo::from_queue(LockName::new("a")?, vec![]);
    /// assert_eq!(info.kind(), None);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn kind(&self) -> Option<EntryKind> {
        self.holders().chain(&self.waiters).next().map(|e| e.kind)
    }

    /// How many entries are ahead of the entry of `owner` (the holder included): `Some(0)` for the
    /// holder, `None` if `owner` is not in the queue.
    ///
    /// ```
    /// use distlock_core::{EntryKind, FencingToken, LockInfo, LockName, QueueEntry};
    /// let e = |t| QueueEntry { owner: format!("s{t}"), token: FencingToken::new(t), since: None, kind: EntryKind::Exclusive };
    /// let info = LockInfo::from_queue(LockName::new("a")?, vec![e(1), e(2), e(3)]);
    /// assert_eq!(info.ahead_of("s3"), Some(2));
    /// assert_eq!(info.ahead_of("s1"), Some(0));
    /// assert_eq!(info.ahead_of("s9"), None);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn ahead_of(&self, owner: &str) -> Option<usize> {
        self.holders().chain(&self.waiters).position(|e| e.owner == owner)
    }

    /// Builds the info from the entries of one queue in queue order, by the grant rule of the
    /// first: a lock's or a writer's holds alone, readers hold up to the first writer, a
    /// semaphore's first N entries hold; the rest wait.
    ///
    /// ```
    /// use distlock_core::{EntryKind, FencingToken, LockInfo, LockName, QueueEntry};
    /// let e = |t, kind| QueueEntry { owner: format!("s{t}"), token: FencingToken::new(t), since: None, kind };
    /// let info = LockInfo::from_queue(LockName::new("a")?, vec![e(1, EntryKind::Exclusive), e(2, EntryKind::Exclusive)]);
    /// assert_eq!(info.holder.unwrap().token.get(), 1);
    /// assert_eq!(info.waiters.len(), 1);
    /// let rw = vec![e(1, EntryKind::Read), e(2, EntryKind::Read), e(3, EntryKind::Write), e(4, EntryKind::Read)];
    /// let info = LockInfo::from_queue(LockName::new("a")?, rw);
    /// assert_eq!((info.holders().count(), info.waiters.len()), (2, 2));
    /// let permits = (1..=5).map(|t| e(t, EntryKind::Permit(3))).collect();
    /// assert_eq!(LockInfo::from_queue(LockName::new("a")?, permits).waiters.len(), 2);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn from_queue(name: LockName, queue: Vec<QueueEntry>) -> Self {
        let holding = match queue.first().map(|e| e.kind) {
            None => 0,
            Some(EntryKind::Read) => queue.iter().take_while(|e| e.kind == EntryKind::Read).count(),
            Some(EntryKind::Permit(permits)) => queue.len().min(permits as usize),
            Some(_) => 1,
        };
        let mut entries = queue.into_iter();
        let holder = entries.next();
        let also_holding = entries.by_ref().take(holding.saturating_sub(1)).collect();
        LockInfo { name, holder, also_holding, waiters: entries.collect() }
    }

    /// The info of `name` from its queues (each in queue order, the lock's first): the first
    /// queue with entries, or the lock's, free. A name in use by two recipes at once (a lock
    /// and a semaphore both called `x`) shows the first; `inspect_all` lists each.
    ///
    /// ```
    /// use distlock_core::{LockInfo, LockName};
    /// assert!(LockInfo::of_queues(LockName::new("a")?, vec![vec![], vec![]]).is_free());
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn of_queues(name: LockName, queues: Vec<Vec<QueueEntry>>) -> Self {
        let queue = queues.into_iter().find(|q| !q.is_empty()).unwrap_or_default();
        LockInfo::from_queue(name, queue)
    }
}
