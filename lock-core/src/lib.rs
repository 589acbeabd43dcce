//! # distlock-core
//!
//! The backend-independent half of distlock: the [`DistributedLock`] trait users program
//! against, the [`LockGuard`] it hands out, [`LockName`], [`FencingToken`], [`SessionState`],
//! the one [`LockError`] type, the in-process [`mem`] backend, and (feature `conformance`) the
//! conformance suite every backend runs.
//!
//! Backends implement the small [`LockBackend`] trait; [`LockClient`] turns one into a
//! [`DistributedLock`] and adds what all backends share: name validation, the per-client FIFO
//! queue that makes a client's tasks one server waiter, guards with release on drop, explicit reentrancy, timeouts and tracing.
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

mod backend;
mod client;
mod error;
mod guard;
mod holds;
mod info;
mod lease_clock;
mod local_queue;
mod lock;
mod lock_url;
mod loss;
mod name;
mod pending_cleanups;
mod progress;
mod recent_contention;
mod release_records;
mod retry;
mod session;
mod session_life;
mod session_slot;
mod settings;
mod token;

pub mod mem;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backend::{LockBackend, OnQueued, ServerHold, ServerRelease};
pub use client::LockClient;
pub use error::{BoxError, LockError};
pub use guard::LockGuard;
pub use holds::HoldRegistry;
pub use info::{LockInfo, QueueEntry};
pub use lease_clock::LeaseClock;
pub use lock::{DistributedLock, DistributedLockExt};
pub use lock_url::{HostPort, LockUrl};
pub use loss::{LossReason, LossSignal};
pub use name::{LockName, MAX_NAME_LEN};
pub use pending_cleanups::{Cleanup, PendingCleanups};
pub use progress::WaitProgress;
pub use recent_contention::RecentContention;
pub use release_records::ReleaseRecords;
pub use retry::{retry_request, Attempt, RetryPolicy};
pub use session::{SessionState, SessionStateCell};
pub use session_life::SessionLife;
pub use session_slot::{HasLife, SessionSlot};
pub use settings::{parse_duration, validate_ttl, MAX_TTL};
pub use token::FencingToken;
