//! Session state as the client sees it, and the cell backends publish it through.

use std::fmt;

use tokio::sync::watch;

/// What the client knows about its session with the server.
///
/// ```
/// use distlock_core::SessionState;
///
/// let state = SessionState::Suspended;
/// assert!(!state.is_connected());
/// assert_eq!(state.to_string(), "suspended");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// The session is alive and the client hears from the server.
    Connected,
    /// The client has not heard from the server recently: the session may still live, and held
    /// locks are in doubt until it reconnects (Curator's SUSPENDED).
    Suspended,
    /// The session is over: every lock it held is lost. Later calls start a new session.
    Expired,
    /// The client was closed ([`crate::DistributedLock::close`]): its session is over on the
    /// server and later calls fail with [`crate::LockError::Closed`].
    Closed,
}

impl SessionState {
    /// True only for [`SessionState::Connected`].
    ///
    /// ```
    /// assert!(distlock_core::SessionState::Connected.is_connected());
    /// ```
    pub fn is_connected(self) -> bool {
        self == SessionState::Connected
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::Connected => "connected",
            SessionState::Suspended => "suspended",
            SessionState::Expired => "expired",
            SessionState::Closed => "closed",
        })
    }
}

/// A shared, observable [`SessionState`] that a backend updates and anyone can watch. Changes
/// are logged as tracing events.
///
/// ```
/// use distlock_core::{SessionState, SessionStateCell};
///
/// let cell = SessionStateCell::new("mem");
/// let mut changes = cell.subscribe();
/// cell.set(SessionState::Suspended);
/// assert_eq!(*changes.borrow_and_update(), SessionState::Suspended);
/// ```
#[derive(Debug, Clone)]
pub struct SessionStateCell {
    backend: &'static str,
    tx: watch::Sender<SessionState>,
}

impl SessionStateCell {
    /// A cell that starts as [`SessionState::Connected`].
    ///
    /// ```
    /// let cell = distlock_core::SessionStateCell::new("etcd");
    /// assert!(cell.get().is_connected());
    /// ```
    pub fn new(backend: &'static str) -> Self {
        SessionStateCell { backend, tx: watch::Sender::new(SessionState::Connected) }
    }

    /// The current state.
    ///
    /// ```
    /// assert!(distlock_core::SessionStateCell::new("zookeeper").get().is_connected());
    /// ```
    pub fn get(&self) -> SessionState {
        *self.tx.borrow()
    }

    /// Sets the state; `Expired` and `Closed` are final for this cell. Returns whether it changed.
    ///
    /// ```
    /// use distlock_core::{SessionState, SessionStateCell};
    /// let cell = SessionStateCell::new("mem");
    /// assert!(cell.set(SessionState::Expired));
    /// assert!(!cell.set(SessionState::Connected)); // an expired session stays expired
    /// ```
    pub fn set(&self, state: SessionState) -> bool {
        let backend = self.backend;
        self.tx.send_if_modified(|current| {
            if *current == state || matches!(*current, SessionState::Expired | SessionState::Closed) {
                return false;
            }
            match state {
                SessionState::Connected => tracing::info!(backend, "session connected"),
                SessionState::Suspended => {
                    tracing::warn!(backend, "session suspended: not hearing from the server, held locks are in doubt")
                }
                SessionState::Expired => tracing::warn!(backend, "session expired: held locks are lost"),
                SessionState::Closed => tracing::info!(backend, "session closed by the client"),
            }
            *current = state;
            true
        })
    }

    /// A receiver that sees every change.
    ///
    /// ```
    /// let cell = distlock_core::SessionStateCell::new("mem");
    /// let rx = cell.subscribe();
    /// assert!(rx.borrow().is_connected());
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.tx.subscribe()
    }

    /// Waits until the session is expired.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use distlock_core::{SessionState, SessionStateCell};
    /// let cell = SessionStateCell::new("mem");
    /// cell.set(SessionState::Expired);
    /// cell.expired().await;
    /// # }
    /// ```
    pub async fn expired(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let _ = rx.wait_for(|s| *s == SessionState::Expired).await;
    }
}
