//! `SessionStateCell`: the observable [`SessionState`] a backend's session publishes, with a
//! tracing event at every change.

use tokio::sync::watch;

use crate::SessionState;

/// A shared, observable [`SessionState`] that a backend updates and anyone can watch. Changes
/// are logged as tracing events.
///
/// ```
/// use distlock_core::{SessionState, backend::SessionStateCell};
///
/// let cell = SessionStateCell::new("mem");
/// let mut changes = cell.subscribe();
/// cell.set(SessionState::Suspended);
/// assert_eq!(*changes.borrow_and_update(), SessionState::Suspended);
/// ```
#[derive(Debug, Clone)]
pub struct SessionStateCell {
    backend: &'static str,
    /// Whether metrics count this session (a recorder was installed when it opened).
    recorded: bool,
    tx: watch::Sender<SessionState>,
}

impl SessionStateCell {
    /// A cell that starts as [`SessionState::Connected`].
    ///
    /// ```
    /// let cell = distlock_core::backend::SessionStateCell::new("etcd");
    /// assert!(cell.get().is_connected());
    /// ```
    pub fn new(backend: &'static str) -> Self {
        let recorded = crate::metrics::recording();
        if recorded {
            crate::metrics::sessions::moved(backend, None, SessionState::Connected);
        }
        SessionStateCell { backend, recorded, tx: watch::Sender::new(SessionState::Connected) }
    }

    /// The backend's name, as given to [`SessionStateCell::new`].
    ///
    /// ```
    /// assert_eq!(distlock_core::backend::SessionStateCell::new("etcd").backend(), "etcd");
    /// ```
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Whether metrics count this session (see [`crate::metrics`]).
    pub(crate) fn recorded(&self) -> bool {
        self.recorded
    }

    /// The current state.
    ///
    /// ```
    /// assert!(distlock_core::backend::SessionStateCell::new("zookeeper").get().is_connected());
    /// ```
    pub fn get(&self) -> SessionState {
        *self.tx.borrow()
    }

    /// Sets the state; `Expired` and `Closed` are final for this cell. Returns whether it changed.
    ///
    /// ```
    /// use distlock_core::{SessionState, backend::SessionStateCell};
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
            if self.recorded {
                crate::metrics::sessions::moved(backend, Some(*current), state);
            }
            *current = state;
            true
        })
    }

    /// A receiver that sees every change.
    ///
    /// ```
    /// let cell = distlock_core::backend::SessionStateCell::new("mem");
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
    /// use distlock_core::{SessionState, backend::SessionStateCell};
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
