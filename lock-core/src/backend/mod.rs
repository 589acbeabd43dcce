//! For backend authors: the [`LockBackend`] trait a backend implements (one session's place in a
//! server-side queue), and the toolkit every backend is built with: a session's life and lease
//! clock ([`SessionLife`], [`LeaseClock`], [`SessionStateCell`]), the slot that replaces an
//! ended session ([`SessionSlot`]), the holds a session's end reaches ([`HoldRegistry`],
//! [`LossSignal`]), retries of ambiguous requests ([`retry_request`]), background deletes in
//! flight ([`PendingCleanups`]), the routing of a session's permit marks to its waiting permits
//! ([`PermitMailbox`]), and the memories that pick a cheaper path ([`RecentContention`],
//! [`ReleaseRecords`]).
//!
//! Users of distlock never meet these: what all backends share for users (name validation, the
//! local queue per name, guards, reentrancy, release on drop, timeouts, progress, closing)
//! lives in [`crate::LockClient`], which turns a backend into a [`crate::DistributedLock`].

mod entry;
mod holds;
mod lease_clock;
mod pending_cleanups;
mod permit_mailbox;
mod recent_contention;
mod release_records;
mod retry;
mod session_life;
mod session_slot;
mod state_cell;

pub use crate::loss::LossSignal;
pub use crate::metrics::server_request;
pub(crate) use entry::QueueKind;
pub use entry::{EntryRequest, Grant, GrantRule, Recipe};
pub use holds::HoldRegistry;
pub use lease_clock::LeaseClock;
pub use pending_cleanups::{Cleanup, PendingCleanups};
pub use permit_mailbox::{Heard, Inbox, MailboxWatch, PermitMailbox, Watching, FIRST, GRANTED};
pub use recent_contention::RecentContention;
pub use release_records::ReleaseRecords;
pub use retry::{retry_request, Attempt, RetryPolicy};
pub use session_life::SessionLife;
pub use session_slot::{HasLife, SessionSlot};
pub use state_cell::SessionStateCell;

use async_trait::async_trait;

use crate::{FencingToken, Leader, LockError, LockInfo, LockName, QueueEntry, SessionState};

/// What a backend calls the moment its entry is in the server's queue, with that entry (as
/// [`LockBackend::inspect`] would list it): [`crate::LockClient`] turns it into the caller's
/// [`crate::WaitProgress::Queued`].
pub type OnQueued<'a> = &'a (dyn Fn(QueueEntry) + Send + Sync);

/// A backend: a session with a lock server. [`crate::LockClient`] turns one into a
/// [`crate::DistributedLock`].
///
/// A backend sees at most one acquire per name at a time from its client (the client queues
/// same-name requests locally), so a backend may key its server-side entry on (session, name).
///
/// ```
/// use async_trait::async_trait;
/// use distlock_core::{Leader, LockError, LockInfo, LockName, SessionState};
/// use distlock_core::backend::{EntryRequest, LeaderFeed, LockBackend, OnQueued, ServerHold};
///
/// /// A backend that refuses everything: the smallest possible implementation.
/// struct Closed;
///
/// #[async_trait]
/// impl LockBackend for Closed {
///     async fn acquire(&self, _: &LockName, _: &EntryRequest, _: OnQueued<'_>) -> Result<ServerHold, LockError> { Err(LockError::Closed) }
///     async fn try_acquire(&self, _: &LockName, _: &EntryRequest) -> Result<Option<ServerHold>, LockError> { Err(LockError::Closed) }
///     async fn inspect(&self, _: &LockName) -> Result<LockInfo, LockError> { Err(LockError::Closed) }
///     async fn leader(&self, _: &LockName) -> Result<Option<Leader>, LockError> { Err(LockError::Closed) }
///     async fn observe(&self, _: &LockName) -> Result<Box<dyn LeaderFeed>, LockError> { Err(LockError::Closed) }
///     async fn inspect_all(&self, _: Option<&LockName>) -> Result<Vec<LockInfo>, LockError> { Err(LockError::Closed) }
///     async fn close(&self) -> Result<(), LockError> { Ok(()) }
///     fn session_state(&self) -> SessionState { SessionState::Closed }
/// }
/// let client = distlock_core::LockClient::new(Closed);
/// ```
#[async_trait]
pub trait LockBackend: Send + Sync + 'static {
    /// Takes a place in the server queue for `name` with an entry as `entry` asks (its
    /// recipe's layout, carrying its value), calls `queued` with it once the server has it, and
    /// waits until the recipe's [`GrantRule`] grants it. A hold of an election's entry comes
    /// with [`ServerHold::proclaim`].
    ///
    /// # Cancel safety
    /// Must be cancel safe: if the future is dropped before it returns, the backend removes its
    /// queue entry (in the background if it needs a request, registered so that
    /// [`LockBackend::settle`] can wait for it), so nobody is blocked by it.
    async fn acquire(
        &self,
        name: &LockName,
        entry: &EntryRequest,
        queued: OnQueued<'_>,
    ) -> Result<ServerHold, LockError>;

    /// Like [`LockBackend::acquire`], but if the entry is not granted at once, removes it again
    /// and returns `Ok(None)`.
    ///
    /// # Cancel safety
    /// Must be cancel safe, as [`LockBackend::acquire`].
    async fn try_acquire(&self, name: &LockName, entry: &EntryRequest) -> Result<Option<ServerHold>, LockError>;

    /// The leader of election `name` (the first of its candidates' entries, with its value), or
    /// `None` if nobody campaigns.
    ///
    /// # Cancel safety
    /// Must be cancel safe: it only reads.
    async fn leader(&self, name: &LockName) -> Result<Option<Leader>, LockError>;

    /// Starts following the leader of election `name`. Observing takes no place in the queue.
    ///
    /// # Cancel safety
    /// Must be cancel safe: a dropped call leaves no watch behind.
    async fn observe(&self, name: &LockName) -> Result<Box<dyn LeaderFeed>, LockError>;

    /// Reads the holder and waiters of `name`, in queue order.
    ///
    /// # Cancel safety
    /// Must be cancel safe: it only reads.
    async fn inspect(&self, name: &LockName) -> Result<LockInfo, LockError>;

    /// Reads every lock named `under` or below it (every lock with `None`) that has a holder or
    /// waiters, each as [`LockBackend::inspect`] would, in any order.
    ///
    /// # Cancel safety
    /// Must be cancel safe: it only reads.
    async fn inspect_all(&self, under: Option<&LockName>) -> Result<Vec<LockInfo>, LockError>;

    /// Waits until no background removal of this session's entry for `name` (left by a
    /// cancelled acquire) is in flight, or the session has ended. Backends that remove such
    /// entries synchronously keep the default, which returns at once.
    ///
    /// # Cancel safety
    /// Must be cancel safe: it only waits.
    async fn settle(&self, name: &LockName) {
        let _ = name;
    }

    /// Ends the session on the server and returns once the server confirmed it: every entry of
    /// the session (holds, waiters, removals still in flight) is gone then. Before telling the
    /// server, fires the loss of every hold ([`crate::LossReason::ClientClosed`]); afterwards
    /// opens no new session. Called once, by [`crate::LockClient`]'s `close`.
    ///
    /// # Cancel safety
    /// Must be cancel safe: if dropped before the server answered, the session is still ended
    /// on the client's side and ends on the server when its TTL runs out.
    async fn close(&self) -> Result<(), LockError>;

    /// The state of the current session.
    fn session_state(&self) -> SessionState;

    /// The backend's name in metrics' `backend` label (`etcd`, `zookeeper`, `redis`, `mem`).
    fn backend_name(&self) -> &'static str {
        "custom"
    }
}

/// A granted place at the head of a server queue, as a backend hands it to the client.
///
/// ```
/// use async_trait::async_trait;
/// use distlock_core::{FencingToken, LockError, LockName, backend::{LossSignal, ServerHold, ServerRelease}};
///
/// struct Noop;
/// #[async_trait]
/// impl ServerRelease for Noop {
///     async fn release(self: Box<Self>) -> Result<(), LockError> { Ok(()) }
/// }
/// let name = LockName::new("a")?;
/// let token = FencingToken::new(1);
/// let hold = ServerHold { token, loss: LossSignal::new(name, token), release: Box::new(Noop), proclaim: None };
/// # Ok::<(), LockError>(())
/// ```
pub struct ServerHold {
    /// The hold's fencing token.
    pub token: FencingToken,
    /// Fired by the backend when the hold is lost.
    pub loss: LossSignal,
    /// Gives the place up on the server.
    pub release: Box<dyn ServerRelease>,
    /// Replaces the entry's value: `Some` for an election's entry.
    pub proclaim: Option<std::sync::Arc<dyn ServerProclaim>>,
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

/// Replaces a granted election entry's value on the server (etcd's `Proclaim`).
#[async_trait]
pub trait ServerProclaim: Send + Sync + std::fmt::Debug + 'static {
    /// Writes `value` as the entry's value, fenced: only while the entry is still this hold's.
    /// [`LockError::Lost`] if it is gone.
    ///
    /// # Cancel safety
    /// Must be cancel safe in the server's state: a dropped call leaves the entry with the old
    /// value or the new one.
    async fn proclaim(&self, value: &[u8]) -> Result<(), LockError>;
}

/// What a proclaim's fenced write came to, as [`ServerProclaim::proclaim`] returns it:
/// `Ok(true)` it landed; `Ok(false)` the entry `entry` was gone, deleted by someone else; the
/// session's end means the term is lost with it. Other errors pass through.
///
/// ```
/// use distlock_core::{backend::proclaimed, FencingToken, LockError, LossReason};
/// let token = FencingToken::new(7);
/// assert!(proclaimed(Ok(true), "k", token).is_ok());
/// let gone = proclaimed(Ok(false), "k", token);
/// assert!(matches!(gone, Err(LockError::Lost { reason: LossReason::EntryDeleted, .. })));
/// let ended = proclaimed(Err(LockError::SessionExpired { during: "proclaim".into() }), "k", token);
/// assert!(matches!(ended, Err(LockError::Lost { reason: LossReason::SessionExpired, .. })));
/// ```
pub fn proclaimed(written: Result<bool, LockError>, entry: &str, token: FencingToken) -> Result<(), LockError> {
    let lost = |reason| LockError::Lost { name: entry.to_owned(), token, reason };
    match written {
        Ok(true) => Ok(()),
        Ok(false) => Err(lost(crate::LossReason::EntryDeleted)),
        Err(LockError::SessionExpired { .. }) => Err(lost(crate::LossReason::SessionExpired)),
        Err(error) => Err(error),
    }
}

/// A backend's notifications of one election's leader, as [`crate::LeaderObserver`] reports them.
#[async_trait]
pub trait LeaderFeed: Send + 'static {
    /// The leader now on the first call; afterwards waits for the server to tell of a change of
    /// the queue's first entry or its value and returns the leader then, one call per change,
    /// in the server's order. May repeat a state ([`crate::LeaderObserver`] drops repeats).
    ///
    /// # Cancel safety
    /// Must be cancel safe: a change heard but not yet returned is returned by the next call.
    async fn next(&mut self) -> Result<Option<Leader>, LockError>;
}
