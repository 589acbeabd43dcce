//! The user-facing trait `DistributedLock`, and `DistributedLockExt` with conveniences built on it.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    FencingToken, Leader, LeaderObserver, Leadership, LockError, LockGuard, LockInfo, SessionState, WaitProgress,
};

/// A client of a lock service: one session, any number of named locks.
///
/// Object safe, `Send + Sync`: keep it as `Arc<dyn DistributedLock>` and swap backends by URL.
/// Names are validated by [`crate::LockName::new`] before anything is sent.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use std::sync::Arc;
/// use distlock_core::{DistributedLock, mem::MemLocks};
///
/// let locks: Arc<dyn DistributedLock> = Arc::new(MemLocks::connect_default()?);
/// let guard = locks.lock("orders/42/pay").await?;
/// assert!(locks.try_lock("orders/42/pay").await?.is_none()); // held: not waiting
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait DistributedLock: Send + Sync {
    /// Waits for the lock `name` in FIFO order and returns its guard.
    ///
    /// Errors: an invalid name, an unreachable server, or the session expiring while waiting
    /// ([`LockError::SessionExpired`]; never a lock whose session is gone).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future removes this waiter's queue entry (in the background if
    /// the server needs a request); nothing is left behind to block others. If the lock was
    /// granted at the moment of cancellation, it is released again.
    async fn lock(&self, name: &str) -> Result<LockGuard, LockError>;

    /// [`DistributedLock::lock`], reporting the wait to `progress`: [`WaitProgress::Queued`] the
    /// moment this caller's entry is in the server's queue (after any tasks of this client
    /// that wait for the same name), then [`WaitProgress::Waiting`] with the queue as read right
    /// after and every `every` while it waits (one read each). A lock granted at once may
    /// report only `Queued`.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use std::time::Duration;
    /// use distlock_core::{DistributedLock, WaitProgress, mem::MemLocks};
    ///
    /// let locks = MemLocks::connect_default()?;
    /// let guard = locks
    ///     .lock_with_progress("jobs/a", Duration::from_secs(5), &|step| {
    ///         if let WaitProgress::Queued { entry } = step {
    ///             println!("in the queue, to hold with fencing token {}", entry.token);
    ///         }
    ///     })
    ///     .await?;
    /// # drop(guard); Ok(()) }
    /// ```
    async fn lock_with_progress(
        &self,
        name: &str,
        every: Duration,
        progress: &(dyn Fn(WaitProgress) + Send + Sync),
    ) -> Result<LockGuard, LockError>;

    /// Takes the lock only if nobody else holds or waits for it: `Ok(None)` otherwise, and
    /// then its entry is gone from the server when this returns.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    async fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, LockError>;

    /// Waits for the lock at most `timeout`: `Ok(None)` if it was not granted in time, and
    /// then nothing of the wait is left on the server when this returns (it waits for the
    /// removal of its entry, which takes one request; if the server does not answer, until
    /// the session's end removes it).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    async fn lock_timeout(&self, name: &str, timeout: Duration) -> Result<Option<LockGuard>, LockError>;

    /// The holder and waiters of `name` in queue order, for operators and tests.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    async fn inspect(&self, name: &str) -> Result<LockInfo, LockError>;

    /// Every lock under `prefix` that is held or waited for, sorted by name: `""` for all locks
    /// of the client's prefix or chroot, `"jobs"` for `jobs` and the locks below it, `"jobs/"`
    /// for those below it only. For operators: it reads all of them (etcd: one range read;
    /// ZooKeeper: one listing per directory).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, mem::{MemLocks, MemServer}};
    ///
    /// let locks = MemLocks::connect_to(&MemServer::new())?;
    /// let a = locks.lock("jobs/a").await?;
    /// let b = locks.lock("jobs/b/eu").await?;
    /// let other = locks.lock("orders/1").await?;
    /// let names: Vec<String> = locks.inspect_all("jobs/").await?.iter().map(|l| l.name.to_string()).collect();
    /// assert_eq!(names, ["jobs/a", "jobs/b/eu"]);
    /// # drop((a, b, other)); Ok(()) }
    /// ```
    async fn inspect_all(&self, prefix: &str) -> Result<Vec<LockInfo>, LockError>;

    /// Waits for one of the `permits` permits of semaphore `name` (Curator's
    /// `InterProcessSemaphoreV2`, Redisson's `RSemaphore`, kazoo's `Semaphore`): at most
    /// `permits` clients hold one at a time, granted in FIFO order. Each permit is a guard with
    /// a fencing token of its own and [`LockGuard::lost`]; a permit of a session that dies is
    /// freed with it. A release wakes only the waiter it admits, whichever holder releases.
    ///
    /// Every client of `name` must ask with the same number: one that asks with another while
    /// entries with the first are queued gets [`LockError::PermitsMismatch`] (the number is
    /// carried by each entry on the server, so it changes once nobody holds or waits with the
    /// old one). A client holds at most one permit of a name at a time; its tasks take turns.
    /// A semaphore `name` is apart from the lock, the election and the read-write lock `name`.
    /// Its layout on the servers is distlock's own: Curator's semaphore clients do not share it
    /// (docs/zookeeper.md says why).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, mem::{MemLocks, MemServer}};
    ///
    /// let server = MemServer::new();
    /// let workers: Vec<MemLocks> = (0..3).map(|_| MemLocks::connect_to(&server)).collect::<Result<_, _>>()?;
    /// let first = workers[0].acquire_permit("fragile-api", 2).await?;
    /// let second = workers[1].acquire_permit("fragile-api", 2).await?;
    /// assert!(workers[2].try_acquire_permit("fragile-api", 2).await?.is_none()); // both taken
    /// first.release().await?;
    /// let third = workers[2].acquire_permit("fragile-api", 2).await?;
    /// assert!(third.fencing_token() > second.fencing_token());
    /// # Ok(()) }
    /// ```
    async fn acquire_permit(&self, name: &str, permits: u32) -> Result<LockGuard, LockError>;

    /// Takes a permit of semaphore `name` only if one is free and nobody waits:
    /// `Ok(None)` otherwise, and then its entry is gone from the server when this returns.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    async fn try_acquire_permit(&self, name: &str, permits: u32) -> Result<Option<LockGuard>, LockError>;

    /// Waits for the read side of read-write lock `name` (Curator's
    /// `InterProcessReadWriteLock.readLock()`): any number of readers hold together, while no
    /// writer does. Readers and writers queue FIFO together, so a reader that arrives behind a
    /// waiting writer waits for that writer: neither side starves. The guard's fencing token
    /// grows with queue order across both sides, so a store fencing with it refuses a stale
    /// writer once a newer reader or writer got in. The read-write lock `name` is apart from
    /// the lock and the election of the same name.
    ///
    /// A task of this client that holds the write lock of `name` gets
    /// [`LockError::WouldWaitForItself`] (no silent downgrade); tasks of one client that read
    /// `name` take turns locally: share one hold with [`LockGuard::reenter`].
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, mem::{MemLocks, MemServer}};
    ///
    /// let server = MemServer::new();
    /// let (a, b) = (MemLocks::connect_to(&server)?, MemLocks::connect_to(&server)?);
    /// let reading = a.read_lock("prices").await?;
    /// let also_reading = b.read_lock("prices").await?; // readers share
    /// assert!(b.try_write_lock("prices").await.is_err()); // this client reads: no upgrade
    /// assert!(MemLocks::connect_to(&server)?.try_write_lock("prices").await?.is_none());
    /// reading.release().await?;
    /// also_reading.release().await?;
    /// # Ok(()) }
    /// ```
    async fn read_lock(&self, name: &str) -> Result<LockGuard, LockError>;

    /// Takes the read side of read-write lock `name` only if no writer holds or waits ahead:
    /// `Ok(None)` otherwise, and then its entry is gone from the server when this returns.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    async fn try_read_lock(&self, name: &str) -> Result<Option<LockGuard>, LockError>;

    /// Waits for the write side of read-write lock `name` (Curator's
    /// `InterProcessReadWriteLock.writeLock()`): held by one writer, with no reader, once
    /// everything queued ahead of it is gone. See [`DistributedLock::read_lock`] for the queue.
    /// A task of this client that holds the read lock of `name` gets
    /// [`LockError::WouldWaitForItself`] (no silent upgrade: it would wait for itself).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, mem::{MemLocks, MemServer}};
    ///
    /// let server = MemServer::new();
    /// let (a, b) = (MemLocks::connect_to(&server)?, MemLocks::connect_to(&server)?);
    /// let writing = a.write_lock("prices").await?;
    /// assert!(b.try_read_lock("prices").await?.is_none()); // a writer excludes readers
    /// let token = writing.fencing_token();
    /// writing.release().await?;
    /// assert!(b.read_lock("prices").await?.fencing_token() > token);
    /// # Ok(()) }
    /// ```
    async fn write_lock(&self, name: &str) -> Result<LockGuard, LockError>;

    /// Takes the write side of read-write lock `name` only if nobody holds or waits for either
    /// side: `Ok(None)` otherwise, and then its entry is gone from the server when this returns.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    async fn try_write_lock(&self, name: &str) -> Result<Option<LockGuard>, LockError>;

    /// Campaigns in election `name` with `value`: waits in FIFO order behind the candidates
    /// that campaigned before, and returns the [`Leadership`] once this candidate leads. Its
    /// term is a fencing token, strictly greater for every later leader; `value` is what
    /// [`DistributedLock::leader`] and observers read. The wire layout is that of etcd's Go
    /// `concurrency.Election` (`etcdctl elect`) and of Curator's LeaderLatch.
    ///
    /// Errors: as [`DistributedLock::lock`]; a candidate whose session expires while it waits
    /// gets [`LockError::SessionExpired`], never leadership.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future withdraws the candidacy (its queue entry is removed, in
    /// the background if the server needs a request); if it was elected at that moment, it
    /// resigns again.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, mem::MemLocks};
    ///
    /// let elections = MemLocks::connect_default()?;
    /// let leadership = elections.campaign("scheduler", "host-a").await?;
    /// assert_eq!(elections.leader("scheduler").await?.map(|l| l.term), Some(leadership.term()));
    /// # Ok(()) }
    /// ```
    async fn campaign(&self, name: &str, value: &str) -> Result<Leadership, LockError>;

    /// Campaigns only if nobody leads or waits: `Ok(None)` otherwise, and then this
    /// candidate's entry is gone from the server when it returns.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::campaign`].
    async fn try_campaign(&self, name: &str, value: &str) -> Result<Option<Leadership>, LockError>;

    /// Campaigns for at most `timeout`: `Ok(None)` if not elected in time, and then nothing of
    /// the candidacy is left on the server when it returns.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::campaign`].
    async fn campaign_timeout(
        &self,
        name: &str,
        value: &str,
        timeout: Duration,
    ) -> Result<Option<Leadership>, LockError>;

    /// The current leader of election `name` with its value and term, or `None` if nobody
    /// campaigns. One read.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    async fn leader(&self, name: &str) -> Result<Option<Leader>, LockError>;

    /// Follows the leader of election `name`: see [`LeaderObserver`]. Takes no place in the
    /// queue; etcd: one watch on the election's keys, ZooKeeper: watches on the leader's znode
    /// and the next candidate's (or the election's directory while nobody leads).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves no watch behind.
    async fn observe(&self, name: &str) -> Result<LeaderObserver, LockError>;

    /// The state of the client's current session.
    fn session_state(&self) -> SessionState;

    /// Shuts the client down and waits for the server to confirm it: every hold of the client
    /// is released and every wait ends, in one request that ends the session (etcd: the
    /// lease's revoke; ZooKeeper: the session's close), so nothing of this client is left on
    /// the server when it returns `Ok`. Guards still held report [`LockGuard::lost`] with
    /// [`crate::LossReason::ClientClosed`] before the server is told; waits in progress and
    /// every later call fail with [`LockError::Closed`]. Closing twice is harmless.
    ///
    /// Like Curator's `close()` and etcd's `Session.Close()`: call it before the process exits,
    /// since the release of a dropped guard runs in a background task that dies with the
    /// runtime, and its entry would wait for the session's TTL.
    ///
    /// # Cancel safety
    /// Cancel safe: the client is closed as soon as this is first polled; if the future is
    /// dropped before the server answered, the session ends on the server when its TTL runs out.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, LockError, LossReason, mem::MemLocks};
    ///
    /// let locks = MemLocks::connect_default()?;
    /// let guard = locks.lock("jobs/nightly").await?;
    /// locks.close().await?;
    /// assert_eq!(guard.lost().await, LossReason::ClientClosed);
    /// assert!(matches!(locks.lock("jobs/nightly").await, Err(LockError::Closed)));
    /// # Ok(()) }
    /// ```
    async fn close(&self) -> Result<(), LockError>;
}

/// Conveniences for every [`DistributedLock`], including `dyn DistributedLock`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use distlock_core::{DistributedLockExt, mem::MemLocks};
///
/// let locks = MemLocks::connect_default()?;
/// let token = locks.with_lock("jobs/report", |token| async move { token }).await?;
/// println!("ran the job under fencing token {token}");
/// # Ok(()) }
/// ```
#[async_trait]
pub trait DistributedLockExt: DistributedLock {
    /// Takes the lock, runs `work` with the fencing token, and releases. If the lock is lost
    /// while `work` runs, `work` is dropped and [`LockError::Lost`] returned.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops `work` and releases the lock in the background.
    async fn with_lock<F, Fut, T>(&self, name: &str, work: F) -> Result<T, LockError>
    where
        F: FnOnce(FencingToken) -> Fut + Send,
        Fut: Future<Output = T> + Send,
        T: Send,
    {
        let guard = self.lock(name).await?;
        let token = guard.fencing_token();
        tokio::select! {
            biased;
            reason = guard.lost() => Err(LockError::Lost { name: guard.name().to_string(), token, reason }),
            value = work(token) => {
                guard.release().await?;
                Ok(value)
            }
        }
    }
}

impl<T: DistributedLock + ?Sized> DistributedLockExt for T {}
