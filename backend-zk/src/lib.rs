//! # distlock-zk
//!
//! The ZooKeeper backend of distlock, in Apache Curator's InterProcessMutex layout: lock `name`
//! is the directory `<chroot>/<name>` (a container node, removed by the server when empty) of
//! ephemeral sequential znodes `_c_<uuid>-lock-<seq>`. A Java service using Curator on the same
//! path and a distlock service exclude each other.
//!
//! - **Acquire**: create our znode, list the directory; first by sequence number holds. Where
//!   the session has not met others lately, the create is one multi that also writes the
//!   directory's data, and the directory's stat in its reply counts the children: one is ours
//!   alone, and we hold without a listing. An uncontended lock then costs two requests, the
//!   multi and the release, as the bare create + delete does. Where the session met others lately, the
//!   listing is sent right behind the create, without waiting for its reply: queuing is one
//!   round trip either way.
//! - **Release**: one multi deletes our znode and writes its name as the directory's data.
//! - **Wait**: each waiter watches the znode just before its own and, in the same round trip,
//!   the one before that (getData with a watch, which also handles a znode that vanished
//!   between the listing and the watch). When that second one goes, the waiter learns whether
//!   its predecessor now holds: it does if the second was the owner at the listing, or if the
//!   directory's data names the second (its holder's release). That read happens during the
//!   predecessor's hold; its deletion then makes the waiter first with no request, so a
//!   hand-off is the release and one notification. A deletion left unexplained is explained by
//!   the directory's data then, and failing that the directory is listed again.
//! - **Protected create**: after a lost connection, the client finds its own znode by its uuid
//!   instead of creating a second one.
//! - **Fencing token**: the czxid of our znode (globally increasing; the sequence suffix restarts
//!   when a container parent is removed and recreated).
//! - **Lost**: fires on session expiry, on our znode's deletion by someone else, and when the
//!   server has not answered for the session timeout minus a margin. An expired session is
//!   never silently re-acquired; later locks use a new session.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
//! use distlock_core::DistributedLock;
//!
//! let locks = distlock_zk::ZkBackend::builder().hosts(["zk1:2181", "zk2:2181"]).chroot("/myapp").connect().await?;
//! let guard = locks.lock("jobs/nightly-report").await?;
//! guard.release().await?;
//! # Ok(()) }
//! ```

mod config;
mod election;
mod errors;
mod hold;
mod inspect;
pub mod layout;
mod permit_mailbox;
mod place;
mod queue;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use distlock_core::{
    backend::{EntryRequest, LeaderFeed, LockBackend, OnQueued, ServerHold, SessionSlot},
    Leader, LockClient, LockError, LockInfo, LockName, LockUrl, SessionState,
};

pub use config::{ZkBuilder, ZkConfig, DEFAULT_CHROOT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SESSION_TIMEOUT};
use session::ZkSession;
pub use zookeeper_client;

/// A distlock client on ZooKeeper.
pub type ZkLocks = LockClient<ZkBackend>;

/// Connects to the ensemble a `zk://` URL names (see [`ZkConfig::from_url`]).
///
/// # Cancel safety
/// Cancel safe: see [`ZkBuilder::connect`].
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
/// let url = distlock_core::LockUrl::parse("zk://127.0.0.1:2181/myapp?session_timeout=10s")?;
/// let locks = distlock_zk::connect_url(&url).await?;
/// # drop(locks); Ok(()) }
/// ```
pub async fn connect_url(url: &LockUrl) -> Result<ZkLocks, LockError> {
    Ok(LockClient::new(ZkBackend::connect(ZkConfig::from_url(url)?).await?))
}

/// The ZooKeeper backend: the current session. Wrap it in a [`LockClient`] (the builder's
/// `connect` does) to get a `DistributedLock`.
#[derive(Debug)]
pub struct ZkBackend {
    config: Arc<ZkConfig>,
    session: Arc<SessionSlot<ZkSession>>,
    requests: Arc<AtomicU64>,
}

impl ZkBackend {
    /// A builder with the defaults.
    ///
    /// ```
    /// let builder = distlock_zk::ZkBackend::builder();
    /// # drop(builder);
    /// ```
    pub fn builder() -> ZkBuilder {
        ZkBuilder::default()
    }

    /// Connects with validated settings (a new session), within the connect timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: a half-made session is closed when dropped.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
    /// let backend = distlock_zk::ZkBackend::connect(distlock_zk::ZkBackend::builder().config()?).await?;
    /// # drop(backend); Ok(()) }
    /// ```
    pub async fn connect(config: ZkConfig) -> Result<Self, LockError> {
        let config = Arc::new(config);
        let requests = Arc::new(AtomicU64::new(0));
        let session = ZkSession::open(config.clone(), requests.clone()).await?;
        Ok(ZkBackend { config, session: Arc::new(SessionSlot::new(session)), requests })
    }

    fn current(&self) -> Arc<ZkSession> {
        self.session.current()
    }

    /// Queues for `name` on the live session ([`SessionSlot::on_live`]).
    async fn enqueue(&self, name: &LockName, entry: &EntryRequest) -> Result<queue::Queued, LockError> {
        self.session
            .on_live(
                || ZkSession::open(self.config.clone(), self.requests.clone()),
                |session| queue::enqueue(session, name, entry),
            )
            .await
    }

    /// The current session, or a new one if it expired: an expired session is never reused.
    async fn live_session(&self) -> Result<Arc<ZkSession>, LockError> {
        self.session.live(|| ZkSession::open(self.config.clone(), self.requests.clone())).await
    }

    /// The settings.
    ///
    /// ```no_run
    /// # fn f(locks: distlock_zk::ZkLocks) { println!("{:?}", locks.backend().config()); }
    /// ```
    pub fn config(&self) -> &ZkConfig {
        &self.config
    }

    /// The current session's `zookeeper-client` client, for your own requests;
    /// [`LockError::Closed`] once the client was closed. Drop it when done: while a handle of
    /// it lives, [`distlock_core::DistributedLock::close`] cannot end the session.
    ///
    /// ```no_run
    /// # fn f(locks: distlock_zk::ZkLocks) -> Result<(), distlock_core::LockError> {
    /// println!("{:?}", locks.backend().client()?.session_id());
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> Result<zookeeper_client::Client, LockError> {
        self.current().client().map_err(|_| LockError::Closed)
    }

    /// Requests this client has sent (the session's own probes and pings excluded).
    ///
    /// ```no_run
    /// # fn f(locks: distlock_zk::ZkLocks) { println!("{}", locks.backend().requests()); }
    /// ```
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl LockBackend for ZkBackend {
    async fn acquire(
        &self,
        name: &LockName,
        entry: &EntryRequest,
        on_queued: OnQueued<'_>,
    ) -> Result<ServerHold, LockError> {
        let queued = self.enqueue(name, entry).await?;
        on_queued(queued.entry());
        Ok(hold::grant(queued.wait_until_first().await?))
    }

    async fn try_acquire(&self, name: &LockName, entry: &EntryRequest) -> Result<Option<ServerHold>, LockError> {
        let queued = self.enqueue(name, entry).await?;
        Ok(queued.first_or_leave().await?.map(hold::grant))
    }

    async fn leader(&self, name: &LockName) -> Result<Option<Leader>, LockError> {
        let session = self.live_session().await?;
        election::leader(&session, &self.config.lock_dir(name.as_str())).await
    }

    async fn observe(&self, name: &LockName) -> Result<Box<dyn LeaderFeed>, LockError> {
        let dir = self.config.lock_dir(name.as_str());
        Ok(Box::new(election::LeaderWatch::new(self.session.clone(), self.config.clone(), self.requests.clone(), dir)))
    }

    async fn inspect(&self, name: &LockName) -> Result<LockInfo, LockError> {
        Ok(LockInfo::of_queues(name.clone(), inspect::inspect(&self.current(), name).await?))
    }

    async fn inspect_all(&self, under: Option<&LockName>) -> Result<Vec<LockInfo>, LockError> {
        let top = match under {
            Some(dir) => self.config.lock_dir(dir.as_str()),
            None => match self.config.lock_dir("").trim_end_matches('/') {
                "" => "/".to_owned(),
                chroot => chroot.to_owned(),
            },
        };
        let locks = inspect::inspect_all(&self.current(), &top).await?;
        Ok(locks.into_iter().map(|(name, queue)| LockInfo::from_queue(name, queue)).collect())
    }

    async fn settle(&self, name: &LockName) {
        let session = self.current();
        session.cleanups.wait(&self.config.lock_dir(name.as_str()), &session.life).await;
    }

    async fn close(&self) -> Result<(), LockError> {
        match self.session.close() {
            Some(session) => session.close().await,
            None => Ok(()),
        }
    }

    fn session_state(&self) -> SessionState {
        self.current().life.state()
    }

    fn backend_name(&self) -> &'static str {
        "zookeeper"
    }
}
