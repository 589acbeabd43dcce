//! The user-facing trait `DistributedLock`, and `DistributedLockExt` with conveniences built on it.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use crate::{FencingToken, LockError, LockGuard, LockInfo, SessionState};

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

    /// Takes the lock only if nobody else holds or waits for it: `Ok(None)` otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    async fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, LockError>;

    /// Waits for the lock at most `timeout`: `Ok(None)` if it was not granted in time, and then
    /// nothing of the wait is left on the server.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`DistributedLock::lock`].
    async fn lock_timeout(&self, name: &str, timeout: Duration) -> Result<Option<LockGuard>, LockError>;

    /// The holder and waiters of `name` in queue order, for operators and tests.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    async fn inspect(&self, name: &str) -> Result<LockInfo, LockError>;

    /// The state of the client's current session.
    fn session_state(&self) -> SessionState;
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
