//! # distlock
//!
//! Fair distributed locks on etcd, ZooKeeper or Redis behind one [`DistributedLock`] trait, with
//! fencing tokens, a lost-lock signal, and an in-process `mem://` backend for tests.
//!
//! Pick the backend by URL; the code that uses the lock stays the same:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock::LockError> {
//! let locks = distlock::connect("mem://").await?; // or etcd://h1:2379/myapp, zk://…, redis://…
//! let guard = locks.lock("jobs/nightly-report").await?;
//! println!("holding with fencing token {}", guard.fencing_token());
//! guard.release().await?;
//! # Ok(()) }
//! ```

mod connect;

pub use connect::{connect, connect_url, ttl_param};
pub use distlock_core::{
    mem, metrics, DistributedLock, DistributedLockExt, EntryKind, FencingToken, Leader, LeaderObserver, Leadership,
    LockClient, LockError, LockGuard, LockInfo, LockName, LockUrl, LossReason, QueueEntry, SessionState, WaitProgress,
};
#[cfg(feature = "etcd")]
pub use distlock_etcd as etcd;
#[cfg(feature = "redis")]
pub use distlock_redis as redis;
#[cfg(feature = "zookeeper")]
pub use distlock_zk as zookeeper;
