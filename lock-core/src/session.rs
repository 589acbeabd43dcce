//! Session state as the client sees it.

use std::fmt;

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
