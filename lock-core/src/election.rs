//! Leader election as users meet it: the [`Leadership`] a won campaign hands out, the
//! [`Leader`] others read, and the [`LeaderObserver`] that follows every change of leader.
//!
//! An election is a lock whose queue entries carry the candidates' values: the candidate whose
//! entry is first leads, the entry's fencing token is the leader's term, and everything the
//! lock gives (FIFO order, loss signal, release on drop, cancel safety) holds for it.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::backend::{LeaderFeed, ServerProclaim};
use crate::{FencingToken, LockError, LockGuard, LockName, LossReason};

/// A leader as others see it: its value and its term.
///
/// ```
/// use distlock_core::{FencingToken, Leader};
/// let leader = Leader { value: "10.0.0.5:8080".into(), term: FencingToken::new(42) };
/// assert_eq!(leader.term.get(), 42);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The value the leader published (its campaign's or its latest proclaim's). Bytes that
    /// are not UTF-8 (written by another client) are shown lossily.
    pub value: String,
    /// The leader's term: its entry's fencing token, strictly greater for every later leader.
    pub term: FencingToken,
}

/// Proof that this client leads an election, with its [`Leadership::term`].
///
/// Feels like a [`LockGuard`]: dropping it resigns in the background, [`Leadership::resign`]
/// resigns and waits for the server, [`Leadership::lost`] fires when the leadership can no
/// longer be trusted (no later than the moment another candidate could be elected).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use distlock_core::{DistributedLock, mem::MemLocks};
///
/// let elections = MemLocks::connect_default()?;
/// let leadership = elections.campaign("shards/7", "10.0.0.5:8080").await?;
/// println!("leading {} in term {}", leadership.name(), leadership.term());
/// tokio::select! {
///     _ = async { /* lead, writing with leadership.term() as the fencing token */ } => {}
///     reason = leadership.lost() => println!("no longer leader: {reason}"),
/// }
/// leadership.resign().await?;
/// # Ok(()) }
/// ```
#[must_use = "leadership is given up as soon as it is dropped"]
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
    value: Mutex<String>,
    proclaim: Arc<dyn ServerProclaim>,
}

impl Leadership {
    pub(crate) fn new(guard: LockGuard, value: String, proclaim: Arc<dyn ServerProclaim>) -> Self {
        Leadership { guard, value: Mutex::new(value), proclaim }
    }

    /// The election's name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let leadership = MemLocks::connect_default()?.campaign("e/name", "me").await?;
    /// assert_eq!(leadership.name().as_str(), "e/name");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &LockName {
        self.guard.name()
    }

    /// The term: this leadership's fencing token, strictly greater than every earlier leader's
    /// of the same election. Hand it to the stores the leader writes to.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let elections = MemLocks::connect_default()?;
    /// let first = elections.campaign("e/term", "a").await?;
    /// let term = first.term();
    /// first.resign().await?;
    /// assert!(elections.campaign("e/term", "b").await?.term() > term);
    /// # Ok(()) }
    /// ```
    pub fn term(&self) -> FencingToken {
        self.guard.fencing_token()
    }

    /// The value this leader publishes: its campaign's, or its latest [`Leadership::proclaim`]'s.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let leadership = MemLocks::connect_default()?.campaign("e/value", "v1").await?;
    /// assert_eq!(leadership.value(), "v1");
    /// # Ok(()) }
    /// ```
    pub fn value(&self) -> String {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the leadership is still trusted: not lost.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// assert!(MemLocks::connect_default()?.campaign("e/held", "v").await?.is_leader());
    /// # Ok(()) }
    /// ```
    pub fn is_leader(&self) -> bool {
        self.guard.is_held()
    }

    /// Resolves when the leadership can no longer be trusted, with the reason: no later than
    /// the moment the server could elect another candidate. Never resolves for a leadership
    /// that is resigned normally.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, LossReason, mem::MemLocks};
    /// let elections = MemLocks::connect_default()?;
    /// let leadership = elections.campaign("e/lost", "v").await?;
    /// elections.backend().kill_session();
    /// assert_eq!(leadership.lost().await, LossReason::SessionExpired);
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) -> LossReason {
        self.guard.lost().await
    }

    /// A token cancelled when the leadership is lost: hand it to tasks that must stop then.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let leadership = MemLocks::connect_default()?.campaign("e/token", "v").await?;
    /// assert!(!leadership.lost_token().is_cancelled());
    /// # Ok(()) }
    /// ```
    pub fn lost_token(&self) -> CancellationToken {
        self.guard.lost_token()
    }

    /// Publishes `value` as the leader's value without giving up leadership (etcd's
    /// `Proclaim`). Fenced: the write only lands while this term's entry is on the server, so
    /// a leader that lost its term gets [`LockError::Lost`] and changes nothing.
    ///
    /// # Cancel safety
    /// Not cancel safe in what it publishes: if the future is dropped after the request was
    /// sent, the new value may or may not be published (observers then see it or not); the
    /// leadership itself is not affected.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let elections = MemLocks::connect_default()?;
    /// let leadership = elections.campaign("e/proclaim", "starting").await?;
    /// leadership.proclaim("serving on :8080").await?;
    /// assert_eq!(elections.leader("e/proclaim").await?.map(|l| l.value), Some("serving on :8080".into()));
    /// # Ok(()) }
    /// ```
    pub async fn proclaim(&self, value: &str) -> Result<(), LockError> {
        let lost = |reason| LockError::Lost { name: self.name().to_string(), token: self.term(), reason };
        if let Some(reason) = self.guard.lost_reason() {
            return Err(lost(reason));
        }
        match crate::metrics::serving("proclaim", self.proclaim.proclaim(value.as_bytes())).await {
            Ok(()) => {
                *self.value.lock().unwrap_or_else(|p| p.into_inner()) = value.to_owned();
                tracing::info!(election = %self.name(), term = self.term().get(), value, "leader proclaimed a new value");
                Ok(())
            }
            Err(LockError::Lost { reason, .. }) => Err(lost(reason)),
            Err(error) => Err(error),
        }
    }

    /// The leadership as a plain hold, for code that treats every hold alike (run a job under
    /// it, watch `lost()`, release): the guard's fencing token is the term, and releasing or
    /// dropping it resigns. The way to [`Leadership::proclaim`] is given up.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let elections = MemLocks::connect_default()?;
    /// let leadership = elections.campaign("e/into-guard", "v").await?;
    /// let term = leadership.term();
    /// let guard = leadership.into_guard();
    /// assert_eq!(guard.fencing_token(), term);
    /// guard.release().await?; // resigns
    /// assert_eq!(elections.leader("e/into-guard").await?, None);
    /// # Ok(()) }
    /// ```
    pub fn into_guard(self) -> LockGuard {
        self.guard
    }

    /// Gives up leadership and waits for the server to confirm: the next candidate in line is
    /// elected at once. Errors as [`LockGuard::release`].
    ///
    /// # Cancel safety
    /// Cancel safe: the resignation runs in a spawned task and completes even if this future
    /// is dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let elections = MemLocks::connect_default()?;
    /// elections.campaign("e/resign", "v").await?.resign().await?;
    /// assert_eq!(elections.leader("e/resign").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn resign(self) -> Result<(), LockError> {
        tracing::info!(election = %self.name(), term = self.term().get(), "leader resigning");
        self.guard.release().await
    }
}

/// Follows the leader of one election: [`LeaderObserver::next`] gives the leader at the start,
/// then every change — `Some(leader)` for a new leader or a new value, `None` when nobody
/// leads — in term order. It never reports a term older than one it reported. On etcd and
/// `mem://` it misses no term; on ZooKeeper, whose watches fire once and carry no data, a term
/// that begins and ends while the observer is disconnected, or two that end before it heard of
/// the first, can pass unseen.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use distlock_core::{DistributedLock, mem::{MemLocks, MemServer}};
///
/// let server = MemServer::new();
/// let (candidate, watcher) = (MemLocks::connect_to(&server)?, MemLocks::connect_to(&server)?);
/// let mut observer = watcher.observe("shards/7").await?;
/// assert_eq!(observer.next().await?, None); // nobody leads yet
/// let leadership = candidate.campaign("shards/7", "10.0.0.5").await?;
/// let leader = observer.next().await?.expect("a leader");
/// assert_eq!((leader.value.as_str(), leader.term), ("10.0.0.5", leadership.term()));
/// # Ok(()) }
/// ```
pub struct LeaderObserver {
    name: LockName,
    feed: Box<dyn LeaderFeed>,
    /// What was last reported: `None` before the first report.
    reported: Option<Option<Leader>>,
    highest_term: Option<FencingToken>,
    closed: CancellationToken,
}

impl std::fmt::Debug for LeaderObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderObserver").field("name", &self.name).field("reported", &self.reported).finish()
    }
}

impl LeaderObserver {
    pub(crate) fn new(name: LockName, feed: Box<dyn LeaderFeed>, closed: CancellationToken) -> Self {
        LeaderObserver { name, feed, reported: None, highest_term: None, closed }
    }

    /// The election's name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let observer = MemLocks::connect_default()?.observe("e/observed").await?;
    /// assert_eq!(observer.name().as_str(), "e/observed");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// Waits for the next change and returns it; the first call returns the leader at once.
    /// Errors when the client is closed ([`LockError::Closed`]) or the server cannot be read;
    /// the observer may be polled again after a retryable error.
    ///
    /// # Cancel safety
    /// Cancel safe: a change not yet returned is returned by the next call.
    pub async fn next(&mut self) -> Result<Option<Leader>, LockError> {
        loop {
            let state = tokio::select! {
                biased;
                _ = self.closed.cancelled() => return Err(LockError::Closed),
                state = crate::metrics::serving("observe", self.feed.next()) => state?,
            };
            if self.reported.as_ref() == Some(&state) {
                continue;
            }
            if let (Some(leader), Some(highest)) = (&state, self.highest_term) {
                if leader.term < highest {
                    continue; // an older term, read late: never go back
                }
            }
            if let Some(leader) = &state {
                self.highest_term = Some(leader.term);
            }
            match &state {
                Some(leader) => {
                    tracing::debug!(election = %self.name, term = leader.term.get(), value = %leader.value, "observed a leader")
                }
                None => tracing::debug!(election = %self.name, "observed no leader"),
            }
            self.reported = Some(state.clone());
            return Ok(state);
        }
    }
}
