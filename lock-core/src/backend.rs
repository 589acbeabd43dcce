//! What a backend must implement: one session's place in a server-side queue. Everything both
//! backends share (the local queue of semantic 9, guards, reentrancy, release on drop, timeouts,
//! name validation, tracing of acquire and release) lives in [`crate::LockClient`], not here.

use async_trait::async_trait;

use crate::{FencingToken, LockError, LockInfo, LockName, LossSignal, SessionState};

/// A backend: a session with a lock server. [`crate::LockClient`] turns one into a
/// [`crate::DistributedLock`].
///
/// A backend sees at most one acquire per name at a time from its client (the client queues
/// same-name requests locally), so a backend may key its server-side entry on (session, name).
///
/// ```
/// use async_trait::async_trait;
/// use distlock_core::{LockBackend, LockError, LockInfo, LockName, ServerHold, SessionState};
///
/// /// A backend that refuses everything: the smallest possible implementation.
/// struct Closed;
///
/// #[async_trait]
/// impl LockBackend for Closed {
///     async fn acquire(&self, _: &LockName) -> Result<ServerHold, LockError> { Err(LockError::Closed) }
///     async fn try_acquire(&self, _: &LockName) -> Result<Option<ServerHold>, LockError> { Err(LockError::Closed) }
///     async fn inspect(&self, _: &LockName) -> Result<LockInfo, LockError> { Err(LockError::Closed) }
///     fn session_state(&self) -> SessionState { SessionState::Expired }
/// }
/// let client = distlock_core::LockClient::new(Closed);
/// ```
#[async_trait]
pub trait LockBackend: Send + Sync + 'static {
    /// Takes a place in the server queue for `name` and waits until it is first.
    ///
    /// # Cancel safety
    /// Must be cancel safe: if the future is dropped before it returns, the backend removes its
    /// queue entry (in the background if it needs a request), so nobody is blocked by it.
    async fn acquire(&self, name: &LockName) -> Result<ServerHold, LockError>;

    /// Like [`LockBackend::acquire`], but if someone else holds or waits for `name`, removes its
    /// own entry again and returns `Ok(None)`.
    ///
    /// # Cancel safety
    /// Must be cancel safe, as [`LockBackend::acquire`].
    async fn try_acquire(&self, name: &LockName) -> Result<Option<ServerHold>, LockError>;

    /// Reads the holder and waiters of `name`, in queue order.
    ///
    /// # Cancel safety
    /// Must be cancel safe: it only reads.
    async fn inspect(&self, name: &LockName) -> Result<LockInfo, LockError>;

    /// The state of the current session.
    fn session_state(&self) -> SessionState;
}

/// A granted place at the head of a server queue, as a backend hands it to the client.
///
/// ```
/// use async_trait::async_trait;
/// use distlock_core::{FencingToken, LockError, LockName, LossSignal, ServerHold, ServerRelease};
///
/// struct Noop;
/// #[async_trait]
/// impl ServerRelease for Noop {
///     async fn release(self: Box<Self>) -> Result<(), LockError> { Ok(()) }
/// }
/// let name = LockName::new("a")?;
/// let token = FencingToken::new(1);
/// let hold = ServerHold { token, loss: LossSignal::new(name, token), release: Box::new(Noop) };
/// # Ok::<(), LockError>(())
/// ```
pub struct ServerHold {
    /// The hold's fencing token.
    pub token: FencingToken,
    /// Fired by the backend when the hold is lost.
    pub loss: LossSignal,
    /// Gives the place up on the server.
    pub release: Box<dyn ServerRelease>,
}

impl std::fmt::Debug for ServerHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHold").field("token", &self.token).field("loss", &self.loss).finish_non_exhaustive()
    }
}

/// Gives up a server-side hold. Runs in a spawned task, so it finishes even if the caller that
/// asked for it is cancelled.
#[async_trait]
pub trait ServerRelease: Send + 'static {
    /// Deletes the hold's server entry, fenced so that it can never delete a newer holder's
    /// entry. An error means the delete was not confirmed; the session's end is the backstop.
    async fn release(self: Box<Self>) -> Result<(), LockError>;
}
