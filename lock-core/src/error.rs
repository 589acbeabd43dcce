//! The one error type of distlock: what went wrong, with context and the source error kept, and
//! whether trying again can help ([`LockError::is_retryable`]).

use std::time::Duration;

use crate::{FencingToken, LossReason};

/// A boxed source error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong with a distributed lock.
///
/// Backends map their client's errors into these variants and keep the original error as
/// [`std::error::Error::source`]. Use [`LockError::is_retryable`] to decide whether to try again.
///
/// ```
/// use distlock_core::{LockError, LockName};
///
/// let err = LockName::new("").unwrap_err();
/// assert!(matches!(err, LockError::InvalidName { .. }));
/// assert!(!err.is_retryable());
/// println!("{err}"); // says what was wrong and what to do
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock name breaks a naming rule. Nothing was sent to the server.
    #[error("invalid lock name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks and how to fix it.
        reason: String,
    },

    /// A setting (TTL, timeout, prefix, ...) is out of range. Nothing was changed.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidConfig {
        /// The setting's name as a user writes it (`ttl`, `connect_timeout`, ...).
        setting: String,
        /// What is wrong and which values are accepted.
        reason: String,
    },

    /// A connection URL could not be parsed or names something unsupported.
    #[error("invalid lock URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, with any password masked.
        url: String,
        /// What is wrong and how a correct URL looks.
        reason: String,
    },

    /// The URL names a backend that this build does not include.
    #[error("the `{scheme}://` backend is not compiled in: enable the `{feature}` feature of the `distlock` crate")]
    BackendNotEnabled {
        /// The URL scheme asked for.
        scheme: String,
        /// The Cargo feature that adds it.
        feature: &'static str,
    },

    /// No server answered within the connect or request timeout. Retryable.
    #[error("cannot reach {endpoints} ({what}); check that the server runs and the address is right, then retry")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What was attempted.
        what: String,
        /// The client library's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The client's session (etcd lease, ZooKeeper session) ended. Locks it held are lost and a
    /// wait it was in is over; the next `lock` call starts a new session. Retryable.
    #[error("session expired while {during}; any lock it held is lost, and the next call starts a new session")]
    SessionExpired {
        /// What the client was doing (`waiting for lock "jobs/a"`, ...).
        during: String,
    },

    /// The lock was lost before it was released: the work done under it may have overlapped with
    /// another holder. Use the fencing token to reject stale writes.
    #[error("lock {name:?} (fencing token {token}) was lost before release: {reason}")]
    Lost {
        /// The lock's name.
        name: String,
        /// The token of the lost hold.
        token: FencingToken,
        /// Why the lock is no longer trusted.
        reason: LossReason,
    },

    /// The release was sent but not confirmed by the server. The client keeps deleting the
    /// entry in the background until the server confirms it or the session ends, and queues
    /// for the same name again only after: the lock is freed at the latest when the session's
    /// TTL runs out (`backstop`) after the server was last reached.
    #[error("release of lock {name:?} (fencing token {token}) was not confirmed; it is retried in the background, and the server frees the lock at the latest when the session ends, within {backstop:?}")]
    ReleaseUnconfirmed {
        /// The lock's name.
        name: String,
        /// The token of the hold being released.
        token: FencingToken,
        /// The longest time until the server frees the lock by itself.
        backstop: Duration,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },

    /// A backend request failed. `retryable` says whether the same call may succeed later.
    #[error("{backend} request `{op}` failed{}", if *.retryable { " (temporary: retry)" } else { "" })]
    Backend {
        /// `etcd`, `zookeeper`, `redis` or `mem`.
        backend: &'static str,
        /// The request that failed.
        op: String,
        /// Whether a retry can succeed.
        retryable: bool,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// The server refused our credentials or our rights: retrying will not help.
    #[error("{backend} refused to {op}: {reason}; check the user and password in the URL (user:pass@host) and that the user may read and write the lock prefix")]
    Unauthorized {
        /// `etcd`, `zookeeper` or `redis`.
        backend: &'static str,
        /// The request that was refused.
        op: String,
        /// What the server said.
        reason: String,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// This client already holds the other side of read-write lock `name`: a write lock asked
    /// for while it holds a read lock (an upgrade) or a read lock while it holds the write lock
    /// would wait for its own hold forever. Release the hold first (for a downgrade, the write
    /// hold already excludes everyone: keep using it, or `reenter()` it for another task).
    #[error("this client holds the {held} of {name:?}: a {asked} would wait for it forever; release it first")]
    WouldWaitForItself {
        /// The read-write lock's name.
        name: String,
        /// The side held: `"read lock"` or `"write lock"`.
        held: &'static str,
        /// The side asked for.
        asked: &'static str,
    },

    /// Clients disagree on a semaphore's number of permits: entries of `name` are queued with
    /// `queued` permits, and this client asked with `asked`. Nothing of this request is left on
    /// the server. Every client of a semaphore must ask with the same number; it changes once
    /// all holders and waiters with the old number are gone.
    #[error("semaphore {name:?} is in use with {queued} permits, and this client asked with {asked}: use one number for every client (it changes once nobody holds or waits with the old one)")]
    PermitsMismatch {
        /// The semaphore's name.
        name: String,
        /// The number the entries already queued carry.
        queued: u32,
        /// The number this client asked with.
        asked: u32,
    },

    /// The client was shut down; make a new one.
    #[error("the lock client is closed; create a new client")]
    Closed,
}

impl LockError {
    /// Whether the same call may succeed if tried again (after a pause): unreachable servers,
    /// expired sessions and temporary backend errors. Bad input, unknown schemes, lost locks and
    /// unconfirmed releases are final.
    ///
    /// ```
    /// use distlock_core::LockError;
    ///
    /// let err = LockError::SessionExpired { during: "waiting".into() };
    /// assert!(err.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            LockError::Unreachable { .. } | LockError::SessionExpired { .. } => true,
            LockError::Backend { retryable, .. } => *retryable,
            LockError::InvalidName { .. }
            | LockError::InvalidConfig { .. }
            | LockError::InvalidUrl { .. }
            | LockError::BackendNotEnabled { .. }
            | LockError::Lost { .. }
            | LockError::ReleaseUnconfirmed { .. }
            | LockError::Unauthorized { .. }
            | LockError::WouldWaitForItself { .. }
            | LockError::PermitsMismatch { .. }
            | LockError::Closed => false,
        }
    }

    /// A setting error, for builders.
    ///
    /// ```
    /// let err = distlock_core::LockError::invalid_config("ttl", "must be at least 1s");
    /// assert_eq!(err.to_string(), "invalid setting `ttl`: must be at least 1s");
    /// ```
    pub fn invalid_config(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        LockError::InvalidConfig { setting: setting.into(), reason: reason.into() }
    }
}
