//! What `inspect` reports: the holder and the waiters of one lock, in queue order.

use std::time::SystemTime;

use crate::{FencingToken, LockName};

/// One place in a lock's server-side queue.
///
/// ```
/// use distlock_core::{FencingToken, QueueEntry};
/// let entry = QueueEntry { owner: "session-1".into(), token: FencingToken::new(3), since: None };
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
}

impl QueueEntry {
    /// How long ago the entry was created, where the server records it (`None` on etcd).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use distlock_core::{FencingToken, QueueEntry};
    /// let since = SystemTime::now() - Duration::from_secs(5);
    /// let entry = QueueEntry { owner: "s".into(), token: FencingToken::new(1), since: Some(since) };
    /// assert!(entry.age().is_some_and(|age| age >= Duration::from_secs(5)));
    /// ```
    pub fn age(&self) -> Option<std::time::Duration> {
        self.since.and_then(|since| SystemTime::now().duration_since(since).ok())
    }
}

/// The holder and the waiters of one lock, in queue order.
///
/// ```
/// use distlock_core::{LockInfo, LockName};
/// let info = LockInfo { name: LockName::new("a")?, holder: None, waiters: vec![] };
/// assert!(info.is_free());
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock's name.
    pub name: LockName,
    /// The current holder, if any.
    pub holder: Option<QueueEntry>,
    /// The waiters, first in line first.
    pub waiters: Vec<QueueEntry>,
}

impl LockInfo {
    /// Whether nobody holds or waits for the lock.
    ///
    /// ```
    /// use distlock_core::{LockInfo, LockName};
    /// assert!(LockInfo { name: LockName::new("a")?, holder: None, waiters: vec![] }.is_free());
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn is_free(&self) -> bool {
        self.holder.is_none() && self.waiters.is_empty()
    }

    /// How many entries are ahead of the entry of `owner` (the holder included): `Some(0)` for the
    /// holder, `None` if `owner` is not in the queue.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockInfo, LockName, QueueEntry};
    /// let e = |t| QueueEntry { owner: format!("s{t}"), token: FencingToken::new(t), since: None };
    /// let info = LockInfo::from_queue(LockName::new("a")?, vec![e(1), e(2), e(3)]);
    /// assert_eq!(info.ahead_of("s3"), Some(2));
    /// assert_eq!(info.ahead_of("s1"), Some(0));
    /// assert_eq!(info.ahead_of("s9"), None);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn ahead_of(&self, owner: &str) -> Option<usize> {
        self.holder.iter().chain(&self.waiters).position(|e| e.owner == owner)
    }

    /// Builds the info from entries in queue order: the first holds, the rest wait.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockInfo, LockName, QueueEntry};
    /// let e = |t| QueueEntry { owner: format!("s{t}"), token: FencingToken::new(t), since: None };
    /// let info = LockInfo::from_queue(LockName::new("a")?, vec![e(1), e(2)]);
    /// assert_eq!(info.holder.unwrap().token.get(), 1);
    /// assert_eq!(info.waiters.len(), 1);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn from_queue(name: LockName, queue: Vec<QueueEntry>) -> Self {
        let mut entries = queue.into_iter();
        let holder = entries.next();
        LockInfo { name, holder, waiters: entries.collect() }
    }
}
