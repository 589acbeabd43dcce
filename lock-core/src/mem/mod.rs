//! The in-process `mem://` backend: exact lock semantics inside one process, for the quickstart
//! and for users' unit tests. Sessions have a TTL; tests can kill a session (like Curator's
//! `KillSession`), cut the client off the server, or drop a reply, and watch the same behaviour
//! the real backends show.

mod server;
mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use server::MemServer;
use server::QueueId;
use session::{unreachable_error, MemSession, Network};

use crate::{
    backend::{
        proclaimed, EntryRequest, Grant, LeaderFeed, LockBackend, LossSignal, OnQueued, Recipe, ServerHold,
        ServerProclaim, ServerRelease,
    },
    validate_ttl, Leader, LockClient, LockError, LockInfo, LockName, LossReason, QueueEntry, SessionState,
};

/// The default session TTL of `mem://` clients.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// A client of the in-process backend.
pub type MemLocks = LockClient<MemBackend>;

impl MemLocks {
    /// A client of the process-wide default server (what `mem://` connects to).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, mem::MemLocks};
    /// let guard = MemLocks::connect_default()?.lock("a").await?;
    /// # drop(guard); Ok(()) }
    /// ```
    pub fn connect_default() -> Result<Self, LockError> {
        Self::connect_to(&MemServer::named(""))
    }

    /// A client (a new session) of `server`, with the default TTL.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// let server = distlock_core::mem::MemServer::new();
    /// let locks = distlock_core::mem::MemLocks::connect_to(&server)?;
    /// # drop(locks); Ok(()) }
    /// ```
    pub fn connect_to(server: &MemServer) -> Result<Self, LockError> {
        Ok(LockClient::new(MemBackend::builder().server(server.clone()).build()?))
    }
}

/// Settings of a `mem://` client.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use std::time::Duration;
/// use distlock_core::mem::MemBackend;
///
/// let backend = MemBackend::builder().ttl(Duration::from_secs(2)).build()?;
/// assert!(MemBackend::builder().ttl(Duration::ZERO).build().is_err());
/// # drop(backend); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MemBackendBuilder {
    server: Option<MemServer>,
    ttl: Duration,
}

impl MemBackendBuilder {
    /// The server to connect to (default: the process-wide default server of `mem://`).
    ///
    /// ```
    /// let builder = distlock_core::mem::MemBackend::builder().server(distlock_core::mem::MemServer::new());
    /// # drop(builder);
    /// ```
    pub fn server(mut self, server: MemServer) -> Self {
        self.server = Some(server);
        self
    }

    /// The session TTL (default [`DEFAULT_TTL`]); between 50 ms and 1 day.
    ///
    /// ```
    /// let builder = distlock_core::mem::MemBackend::builder().ttl(std::time::Duration::from_secs(3));
    /// # drop(builder);
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Validates the settings and opens a session. Needs a tokio runtime (for the keepalive task).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// let backend = distlock_core::mem::MemBackend::builder().build()?;
    /// assert!(backend.session_id() > 0);
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> Result<MemBackend, LockError> {
        let ttl = validate_ttl("ttl", self.ttl, Duration::from_millis(50))?;
        let server = self.server.unwrap_or_else(|| MemServer::named(""));
        let net = Arc::new(Network::default());
        let session = MemSession::open(&server, ttl, net.clone())?;
        Ok(MemBackend { server, ttl, net, session: Mutex::new(Arc::new(session)), closed: AtomicBool::new(false) })
    }
}

/// The `mem://` backend: a session with a [`MemServer`]. Wrap it in [`LockClient`] (or use
/// [`MemLocks`]) to get a [`crate::DistributedLock`].
#[derive(Debug)]
pub struct MemBackend {
    server: MemServer,
    ttl: Duration,
    net: Arc<Network>,
    session: Mutex<Arc<MemSession>>,
    /// Set by `close`: no new session is opened after it.
    closed: AtomicBool,
}

impl MemBackend {
    /// A builder with the defaults.
    ///
    /// ```
    /// let builder = distlock_core::mem::MemBackend::builder();
    /// # drop(builder);
    /// ```
    pub fn builder() -> MemBackendBuilder {
        MemBackendBuilder { server: None, ttl: DEFAULT_TTL }
    }

    /// The server this client talks to.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// let locks = distlock_core::mem::MemLocks::connect_default()?;
    /// let requests = locks.backend().server().requests();
    /// # let _ = requests; Ok(()) }
    /// ```
    pub fn server(&self) -> &MemServer {
        &self.server
    }

    /// The session TTL.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// let locks = distlock_core::mem::MemLocks::connect_default()?;
    /// assert_eq!(locks.backend().ttl(), distlock_core::mem::DEFAULT_TTL);
    /// # Ok(()) }
    /// ```
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn current(&self) -> Arc<MemSession> {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current session, or a new one if it expired: an expired session is never reused.
    fn live_session(&self) -> Result<Arc<MemSession>, LockError> {
        let mut slot = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            return Err(LockError::Closed);
        }
        if slot.shared.server_ended.is_cancelled() {
            if self.net.is_partitioned() {
                return Err(unreachable_error("open a new session"));
            }
            slot.shared.life.expire();
            *slot = Arc::new(MemSession::open(&self.server, self.ttl, self.net.clone())?);
            tracing::info!(session = slot.shared.id, "mem: new session after expiry");
        }
        Ok(slot.clone())
    }

    /// The id of the current session on the server.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// assert!(distlock_core::mem::MemLocks::connect_default()?.backend().session_id() > 0);
    /// # Ok(()) }
    /// ```
    pub fn session_id(&self) -> u64 {
        self.current().shared.id
    }

    /// Ends the current session on the server now, like Curator's `KillSession`: its locks are
    /// lost (their guards' `lost()` fires) and handed on; the next `lock` starts a new session.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, mem::MemLocks};
    /// let locks = MemLocks::connect_default()?;
    /// let guard = locks.lock("kill-demo").await?;
    /// locks.backend().kill_session();
    /// guard.lost().await;
    /// # Ok(()) }
    /// ```
    pub fn kill_session(&self) {
        let session = self.current();
        self.server.expire_session(session.shared.id);
    }

    /// Cuts this client off the server: keepalives and requests stop getting through. Held
    /// locks' `lost()` fires when the lease clock runs out (TTL minus a margin), before the
    /// server expires the session and hands the locks on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, mem::MemLocks};
    /// let locks = MemLocks::connect_default()?;
    /// locks.backend().partition();
    /// assert!(locks.lock("cut-demo").await.unwrap_err().is_retryable());
    /// locks.backend().heal();
    /// # Ok(()) }
    /// ```
    pub fn partition(&self) {
        self.net.partitioned.send_replace(true);
        tracing::info!(session = self.session_id(), "mem: client cut off the server");
    }

    /// Reconnects a client cut off by [`MemBackend::partition`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// let locks = distlock_core::mem::MemLocks::connect_default()?;
    /// locks.backend().heal(); // harmless when not cut off
    /// # Ok(()) }
    /// ```
    pub fn heal(&self) {
        self.net.partitioned.send_replace(false);
        tracing::info!(session = self.session_id(), "mem: client reconnected");
    }

    /// Loses the reply to the next queuing request after the server has acted on it: the
    /// client must retry without creating a second entry (docs/DESIGN.md, semantic 8).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// use distlock_core::{DistributedLock, mem::MemLocks};
    /// let locks = MemLocks::connect_default()?;
    /// locks.backend().drop_next_reply();
    /// let guard = locks.lock("reply-demo").await?;
    /// assert_eq!(locks.backend().dropped_replies(), 1);
    /// # drop(guard); Ok(()) }
    /// ```
    pub fn drop_next_reply(&self) {
        self.net.replies_to_drop.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many replies were lost so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// assert_eq!(distlock_core::mem::MemLocks::connect_default()?.backend().dropped_replies(), 0);
    /// # Ok(()) }
    /// ```
    pub fn dropped_replies(&self) -> u64 {
        self.net.replies_dropped.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A queue entry that is removed again if the acquire is cancelled before it returns a hold.
struct QueuedEntry {
    session: Arc<MemSession>,
    name: LockName,
    queue: QueueId,
    token: crate::FencingToken,
    recipe: Recipe,
    armed: bool,
}

impl Drop for QueuedEntry {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.session.shared.remove_entry(&self.queue, self.token);
        tracing::debug!(lock = %self.name, token = self.token.get(), "mem: cancelled waiter removed");
    }
}

impl MemBackend {
    /// Queues the current session for `name` as `request` asks: the entry, removed again if
    /// it is dropped armed, and the server's answer.
    async fn enqueue(
        &self,
        name: &LockName,
        request: &EntryRequest,
    ) -> Result<(QueuedEntry, server::Enqueued), LockError> {
        let session = self.live_session()?;
        let queue = QueueId::of(name, request.recipe);
        if session.shared.cleanups.any_pending() {
            session.shared.cleanups.wait(&queue.label(), &session.shared.life).await;
        }
        let enqueued = session.shared.enqueue(name, request.recipe, &request.value)?;
        let entry = QueuedEntry {
            session,
            name: name.clone(),
            queue,
            token: enqueued.token,
            recipe: request.recipe,
            armed: true,
        };
        Ok((entry, enqueued))
    }

    async fn wait_until_first(&self, entry: &QueuedEntry, wake: &tokio::sync::Notify) -> Result<(), LockError> {
        let shared = &entry.session.shared;
        let during = || format!("waiting for lock {:?}", entry.name.as_str());
        let mut counted = false;
        let mut cuts = shared.net.partitioned.subscribe();
        loop {
            if shared.net.is_partitioned() {
                tokio::select! {
                    _ = shared.net.healed() => {}
                    _ = shared.server_ended.cancelled() => return Err(shared.expired_error(&during())),
                }
                continue;
            }
            match shared.server.grant(&entry.queue, entry.token, entry.recipe, counted) {
                Some(Grant::Granted) => return Ok(()),
                Some(_) => {}
                None if shared.server_ended.is_cancelled() => return Err(shared.expired_error(&during())),
                None => {
                    return Err(LockError::Backend {
                        backend: "mem",
                        op: format!("wait for lock {:?}", entry.name.as_str()),
                        retryable: true,
                        source: "this waiter's queue entry was deleted by someone else; call lock again".into(),
                    })
                }
            }
            let recheck_at = shared.server.next_expiry_ahead(&entry.queue, entry.token);
            tokio::select! {
                _ = wake.notified() => {
                    counted = true;
                    tracing::debug!(lock = %entry.name, token = entry.token.get(), "predecessor gone: checking place");
                }
                _ = sleep_until_or_forever(recheck_at) => { counted = false; }
                _ = shared.server_ended.cancelled() => return Err(shared.expired_error(&during())),
                _ = cuts.wait_for(|cut| *cut) => { counted = false; }
            }
        }
    }

    fn into_hold(entry: QueuedEntry, deleted: CancellationToken) -> ServerHold {
        let mut entry = entry;
        entry.armed = false;
        tracing::info!(lock = %entry.name, token = entry.token.get(), "hand-off: first in the queue");
        let shared = entry.session.shared.clone();
        let loss = LossSignal::new(entry.name.clone(), entry.token);
        let registration = shared.life.holds().register(loss.clone());
        let released = CancellationToken::new();
        // An operator deleting the entry is a loss; the client hears of it once connected.
        let watcher = {
            let (loss, released, shared) = (loss.clone(), released.clone(), shared.clone());
            async move {
                tokio::select! {
                    _ = deleted.cancelled() => {
                        shared.net.healed().await;
                        loss.fire(LossReason::EntryDeleted);
                    }
                    _ = released.cancelled() => {}
                    _ = loss.fired() => {}
                }
            }
        };
        tokio::spawn(watcher);
        if shared.server_ended.is_cancelled() {
            loss.fire(LossReason::SessionExpired);
        }
        let proclaim = (entry.recipe == Recipe::Election).then(|| {
            Arc::new(MemProclaim { session: entry.session.clone(), name: entry.name.clone(), token: entry.token })
                as Arc<dyn ServerProclaim>
        });
        ServerHold {
            token: entry.token,
            loss,
            proclaim,
            release: Box::new(MemRelease {
                session: entry.session.clone(),
                name: entry.name.clone(),
                queue: entry.queue.clone(),
                token: entry.token,
                registration,
                released,
            }),
        }
    }
}

async fn sleep_until_or_forever(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct MemRelease {
    session: Arc<MemSession>,
    name: LockName,
    queue: QueueId,
    token: crate::FencingToken,
    registration: u64,
    released: CancellationToken,
}

#[async_trait]
impl ServerRelease for MemRelease {
    async fn release(self: Box<Self>) -> Result<(), LockError> {
        let shared = &self.session.shared;
        self.released.cancel();
        shared.life.holds().remove(self.registration);
        if shared.net.is_partitioned() {
            shared.remove_entry(&self.queue, self.token);
            return Err(LockError::ReleaseUnconfirmed {
                name: self.name.to_string(),
                token: self.token,
                backstop: shared.ttl,
                source: Some(Box::new(unreachable_error("delete the lock entry"))),
            });
        }
        shared.server.remove(&self.queue, self.token);
        Ok(())
    }
}

/// Replaces a leader's value on the server, fenced by its token.
#[derive(Debug)]
struct MemProclaim {
    session: Arc<MemSession>,
    name: LockName,
    token: crate::FencingToken,
}

#[async_trait]
impl ServerProclaim for MemProclaim {
    async fn proclaim(&self, value: &[u8]) -> Result<(), LockError> {
        let shared = &self.session.shared;
        if shared.net.is_partitioned() {
            return Err(unreachable_error("proclaim a new value"));
        }
        let written = match shared.server.set_value(&self.name, self.token, value) {
            false if shared.server_ended.is_cancelled() => Err(shared.expired_error("proclaim a new value")),
            landed => Ok(landed),
        };
        proclaimed(written, self.name.as_str(), self.token)
    }
}

/// An observer of one name on the server: the leader at the start, then each change published.
struct MemFeed {
    server: MemServer,
    name: LockName,
    now: Option<Option<Leader>>,
    changes: tokio::sync::broadcast::Receiver<Option<Leader>>,
}

#[async_trait]
impl LeaderFeed for MemFeed {
    async fn next(&mut self) -> Result<Option<Leader>, LockError> {
        if let Some(now) = self.now.take() {
            return Ok(now);
        }
        use tokio::sync::broadcast::error::RecvError;
        match self.changes.recv().await {
            Ok(leader) => Ok(leader),
            // Fell more than the backlog behind: the current leader is the best it can say.
            Err(RecvError::Lagged(_)) => Ok(self.server.leader(&self.name)),
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

#[async_trait]
impl LockBackend for MemBackend {
    async fn acquire(
        &self,
        name: &LockName,
        request: &EntryRequest,
        queued: OnQueued<'_>,
    ) -> Result<ServerHold, LockError> {
        let (entry, enqueued) = self.enqueue(name, request).await?;
        queued(QueueEntry {
            owner: server::owner_of(entry.session.shared.id),
            token: entry.token,
            since: Some(SystemTime::now()),
            kind: request.recipe.entry_kind(),
        });
        self.wait_until_first(&entry, &enqueued.wake).await?;
        Ok(Self::into_hold(entry, enqueued.deleted))
    }

    async fn try_acquire(&self, name: &LockName, request: &EntryRequest) -> Result<Option<ServerHold>, LockError> {
        let (entry, enqueued) = self.enqueue(name, request).await?;
        match entry.session.shared.server.grant(&entry.queue, enqueued.token, entry.recipe, false) {
            Some(Grant::Granted) => Ok(Some(Self::into_hold(entry, enqueued.deleted))),
            _ => Ok(None), // dropping `entry` removes it again
        }
    }

    async fn leader(&self, name: &LockName) -> Result<Option<Leader>, LockError> {
        if self.net.is_partitioned() {
            return Err(unreachable_error("read the leader"));
        }
        Ok(self.server.leader(name))
    }

    async fn observe(&self, name: &LockName) -> Result<Box<dyn LeaderFeed>, LockError> {
        if self.net.is_partitioned() {
            return Err(unreachable_error("observe the leader"));
        }
        let (now, changes) = self.server.observe(name);
        Ok(Box::new(MemFeed { server: self.server.clone(), name: name.clone(), now: Some(now), changes }))
    }

    async fn inspect(&self, name: &LockName) -> Result<LockInfo, LockError> {
        if self.net.is_partitioned() {
            return Err(unreachable_error("read the lock queue"));
        }
        Ok(LockInfo::of_queues(name.clone(), self.server.snapshot(name)))
    }

    async fn inspect_all(&self, under: Option<&LockName>) -> Result<Vec<LockInfo>, LockError> {
        if self.net.is_partitioned() {
            return Err(unreachable_error("read the lock queues"));
        }
        let queues = self.server.snapshot_all(under);
        Ok(queues.into_iter().map(|(name, queue)| LockInfo::from_queue(name, queue)).collect())
    }

    async fn close(&self) -> Result<(), LockError> {
        let session = {
            let slot = self.session.lock().unwrap_or_else(|p| p.into_inner());
            if self.closed.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            slot.clone()
        };
        let shared = &session.shared;
        shared.life.close();
        if self.net.is_partitioned() {
            return Err(unreachable_error("close the session (the server ends it when its TTL runs out)"));
        }
        shared.server.close_session(shared.id);
        tracing::debug!(session = shared.id, "mem: session closed");
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "mem"
    }

    fn session_state(&self) -> SessionState {
        let session = self.current();
        if session.shared.server_ended.is_cancelled() && !self.net.is_partitioned() {
            return SessionState::Expired;
        }
        session.shared.life.state()
    }
}
