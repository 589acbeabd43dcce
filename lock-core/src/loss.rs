//! The lost-lock signal: how a backend tells every guard of a hold that the lock can no longer be
//! trusted, and why.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::metrics::HoldLabels;
use crate::{FencingToken, LockName};

/// Why a held lock is no longer trusted.
///
/// ```
/// use distlock_core::LossReason;
/// assert!(LossReason::SessionExpired.to_string().contains("session expired"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossReason {
    /// The server ended the session (lease expired or revoked, ZooKeeper session expired).
    SessionExpired,
    /// The holder's key or znode was deleted by someone else (an operator, a tool).
    EntryDeleted,
    /// The client has not heard from the server for so long that the server may already have
    /// ended the session and handed the lock on.
    ServerSilent,
    /// The client itself was closed.
    ClientClosed,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossReason::SessionExpired => "the session expired on the server",
            LossReason::EntryDeleted => "the lock's key/znode was deleted by someone else",
            LossReason::ServerSilent => {
                "the server was silent for longer than the session TTL allows; it may have handed the lock on"
            }
            LossReason::ClientClosed => "the client was closed",
        })
    }
}

/// Fired once when a hold is lost; every guard of the hold observes it.
///
/// Backends create one per hold and fire it; guards wait on it. Firing logs a tracing event with
/// the lock name and fencing token.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use distlock_core::{FencingToken, LockName, LossReason, backend::LossSignal};
///
/// let signal = LossSignal::new(LockName::new("a")?, FencingToken::new(1));
/// assert!(signal.fire(LossReason::EntryDeleted));
/// assert!(!signal.fire(LossReason::SessionExpired)); // only the first reason counts
/// assert_eq!(signal.fired().await, LossReason::EntryDeleted);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct LossSignal {
    inner: Arc<LossInner>,
}

#[derive(Debug)]
struct LossInner {
    name: LockName,
    token: FencingToken,
    cancel: CancellationToken,
    reason: OnceLock<LossReason>,
    /// The labels the loss is counted under in metrics, once the client knows them.
    metric_labels: OnceLock<HoldLabels>,
    /// Whether the loss was counted (by `fire` or by `count_in_metrics`, whichever came second).
    counted: AtomicBool,
}

impl LossSignal {
    /// A signal for the hold of `name` with `token`, not yet fired.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, backend::LossSignal};
    /// let s = LossSignal::new(LockName::new("a")?, FencingToken::new(1));
    /// assert!(!s.is_fired());
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn new(name: LockName, token: FencingToken) -> Self {
        LossSignal {
            inner: Arc::new(LossInner {
                name,
                token,
                cancel: CancellationToken::new(),
                reason: OnceLock::new(),
                metric_labels: OnceLock::new(),
                counted: AtomicBool::new(false),
            }),
        }
    }

    /// Marks the hold lost. Returns `true` if this call fired it, `false` if it had fired before.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, LossReason, backend::LossSignal};
    /// let s = LossSignal::new(LockName::new("a")?, FencingToken::new(1));
    /// assert!(s.fire(LossReason::ServerSilent));
    /// assert_eq!(s.reason(), Some(LossReason::ServerSilent));
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn fire(&self, reason: LossReason) -> bool {
        if self.inner.reason.set(reason).is_err() {
            return false;
        }
        tracing::warn!(lock = %self.inner.name, token = self.inner.token.get(), %reason, "lock lost");
        self.inner.cancel.cancel();
        self.count_once();
        true
    }

    /// Counts the loss in metrics under `labels`, now if it has fired, else when it fires.
    pub(crate) fn count_in_metrics(&self, labels: HoldLabels) {
        let _ = self.inner.metric_labels.set(labels);
        self.count_once();
    }

    /// Counts the loss once both its reason and its labels are known.
    fn count_once(&self) {
        let (Some(reason), Some(labels)) = (self.inner.reason.get(), self.inner.metric_labels.get()) else { return };
        if !self.inner.counted.swap(true, Ordering::SeqCst) {
            labels.lost(*reason);
        }
    }

    /// Whether the hold was lost.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, backend::LossSignal};
    /// assert!(!LossSignal::new(LockName::new("a")?, FencingToken::new(1)).is_fired());
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn is_fired(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The reason, once fired.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, backend::LossSignal};
    /// assert_eq!(LossSignal::new(LockName::new("a")?, FencingToken::new(1)).reason(), None);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn reason(&self) -> Option<LossReason> {
        self.inner.reason.get().copied()
    }

    /// Waits until fired and returns the reason.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{FencingToken, LockName, LossReason, backend::LossSignal};
    /// let s = LossSignal::new(LockName::new("a")?, FencingToken::new(1));
    /// s.fire(LossReason::ClientClosed);
    /// assert_eq!(s.fired().await, LossReason::ClientClosed);
    /// # Ok(()) }
    /// ```
    pub async fn fired(&self) -> LossReason {
        self.inner.cancel.cancelled().await;
        // `reason` is set before `cancel` fires, so it is always there here.
        self.reason().unwrap_or(LossReason::SessionExpired)
    }

    /// A token cancelled when the hold is lost, for `select!` loops and child tasks.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, LossReason, backend::LossSignal};
    /// let s = LossSignal::new(LockName::new("a")?, FencingToken::new(1));
    /// let token = s.cancellation_token();
    /// s.fire(LossReason::EntryDeleted);
    /// assert!(token.is_cancelled());
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inner.cancel.child_token()
    }

    /// The lock name this signal belongs to.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, backend::LossSignal};
    /// assert_eq!(LossSignal::new(LockName::new("a")?, FencingToken::new(1)).name().as_str(), "a");
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn name(&self) -> &LockName {
        &self.inner.name
    }

    /// The fencing token of the hold.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, backend::LossSignal};
    /// assert_eq!(LossSignal::new(LockName::new("a")?, FencingToken::new(4)).token().get(), 4);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn token(&self) -> FencingToken {
        self.inner.token
    }
}
