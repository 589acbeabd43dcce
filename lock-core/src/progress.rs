//! `WaitProgress`: what [`crate::DistributedLock::lock_with_progress`] reports while a caller
//! waits, so that a program (or the person at its terminal) can tell where it stands.

use crate::{LockInfo, QueueEntry};

/// A step of a wait for a lock, reported by [`crate::DistributedLock::lock_with_progress`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use std::time::Duration;
/// use distlock_core::{DistributedLock, WaitProgress, mem::MemLocks};
///
/// let locks = MemLocks::connect_default()?;
/// let guard = locks
///     .lock_with_progress("jobs/report", Duration::from_secs(2), &|step| match step {
///         WaitProgress::Queued { entry } => println!("queued; will hold with token {}", entry.token),
///         WaitProgress::Waiting { ahead, .. } => println!("{ahead} ahead of us"),
///         _ => {}
///     })
///     .await?;
/// # drop(guard); Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitProgress {
    /// This caller's entry is now in the server's queue, behind every entry queued before it:
    /// reported once, the moment the server confirmed it, before any wait. `entry.token` is the
    /// fencing token the caller will hold the lock with.
    Queued {
        /// Our entry, as [`crate::DistributedLock::inspect`] lists it.
        entry: QueueEntry,
    },
    /// The queue as read while waiting: right after queuing, then at every interval.
    Waiting {
        /// The holder and the waiters, in queue order.
        queue: LockInfo,
        /// How many entries are ahead of ours, the holder included.
        ahead: usize,
    },
}
