//! # distlock-core
//!
//! The backend-independent half of distlock: the [`DistributedLock`] trait users program
//! against, the [`LockGuard`] it hands out, [`LockName`], [`FencingToken`], [`SessionState`],
//! the one [`LockError`] type, the in-process [`mem`] backend, and (feature `conformance`) the
//! conformance suite every backend runs.
//!
//! The crate root is what users meet. Backend authors find the rest in [`backend`]: the small
//! [`backend::LockBackend`] trait a backend implements and the toolkit backends are built with.
//! [`LockClient`] turns a backend into a [`DistributedLock`] and adds what all backends share:
//! name validation, the per-client FIFO queue that makes a client's tasks one server waiter,
//! guards with release on drop, explicit reentrancy, timeouts, progress, closing and tracing.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
//! use distlock_core::{DistributedLock, mem::MemLocks};
//!
//! let locks = MemLocks::connect_default()?;
//! let guard = locks.lock("jobs/nightly-report").await?;
//! println!("fencing token {}", guard.fencing_token());
//! guard.release().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod backend;
mod client;
mod election;
mod error;
mod guard;
mod info;
mod local_queue;
mod lock;
mod lock_url;
mod loss;
pub mod metrics;
mod name;
mod progress;
mod session;
mod settings;
mod token;

pub mod mem;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use client::LockClient;
pub use election::{Leader, LeaderObserver, Leadership};
pub use error::{BoxError, LockError};
pub use guard::LockGuard;
pub use info::{EntryKind, LockInfo, QueueEntry};
pub use lock::{DistributedLock, DistributedLockExt};
pub use lock_url::{HostPort, LockUrl};
pub use loss::LossReason;
pub use name::{LockName, MAX_NAME_LEN};
pub use progress::WaitProgress;
pub use session::SessionState;
pub use settings::{parse_duration, validate_ttl, MAX_TTL};
pub use token::FencingToken;
