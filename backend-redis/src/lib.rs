//! # distlock-redis
//!
//! The Redis backend of distlock: the same fair, fenced, herd-free queue as on etcd and
//! ZooKeeper, built from a session key with a TTL and Lua scripts. It needs no server
//! configuration (no keyspace notifications) and no modules, so it runs on managed Redis 6.2+
//! and 7; it talks to one primary.
//!
//! - **Session**: a key `<prefix>:s:<id>` with the session's TTL, renewed by one keepalive
//!   script every TTL/3 for the whole client, however many locks it holds (Redisson's
//!   watchdog, per session instead of per lock). The client counts its session lost at the
//!   send time of the last acknowledged renewal + TTL − a margin, as on etcd.
//! - **Queue**: each name's queue is a sorted set of session ids scored by fencing token, with
//!   each entry's recipe, grant and value beside it. One script queues (idempotently: a
//!   session has one entry per queue, so a retry after a lost reply finds its own), applies
//!   the recipe's grant rule on the server, and skips and removes entries whose session key is
//!   gone. An entry's fencing token comes from the name's counter `<prefix>:t:<name>`,
//!   incremented for every entry and never reset while that key exists.
//! - **Wake-ups**: the script that admits an entry (a release, a cancelled wait) publishes the
//!   grant on that entry's session's channel: a hand-off costs the release's one request and
//!   one message, at 1 waiter as at 1,000. A waiter checks again (one script) only when an
//!   entry it waits behind could have died with its session, at that session's own expiry
//!   time (its PTTL), never by polling.
//! - **Release**: one script removes our entry if it still has our token, and admits the next.
//! - **Lost**: fires when the keepalive finds the session gone or our entry deleted, and when
//!   no keepalive was acknowledged for TTL minus a margin.
//!
//! Redis replicates asynchronously: docs/redis.md says what a failover or a restart without
//! `appendfsync always` can do to these guarantees.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
//! use distlock_core::DistributedLock;
//!
//! let locks = distlock_redis::RedisBackend::builder().address("10.0.0.1:6379").prefix("myapp").connect().await?;
//! let guard = locks.lock("jobs/nightly-report").await?;
//! guard.release().await?;
//! # Ok(()) }
//! ```

mod config;
mod election;
mod errors;
mod hold;
pub mod layout;
mod link;
mod queue;
mod scripts;
mod session;
mod wakes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use distlock_core::backend::{EntryRequest, LeaderFeed, LockBackend, OnQueued, ServerHold, SessionSlot};
use distlock_core::{Leader, LockClient, LockError, LockInfo, LockName, LockUrl, QueueEntry, SessionState};
use redis::{ConnectionAddr, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo};

pub use config::{
    RedisBuilder, RedisConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PREFIX, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TTL,
};
pub use redis;

use link::Link;
use queue::Enqueued;
use session::RedisSession;

/// A distlock client on Redis.
pub type RedisLocks = LockClient<RedisBackend>;

/// Connects to the Redis primary a `redis://` or `rediss://` URL names (see [`RedisConfig::from_url`]).
///
/// # Cancel safety
/// Cancel safe: see [`RedisBuilder::connect`].
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
/// let url = distlock_core::LockUrl::parse("redis://127.0.0.1:6379/0?prefix=myapp&ttl=10s")?;
/// let locks = distlock_redis::connect_url(&url).await?;
/// # drop(locks); Ok(()) }
/// ```
pub async fn connect_url(url: &LockUrl) -> Result<RedisLocks, LockError> {
    Ok(LockClient::new(RedisBackend::connect(RedisConfig::from_url(url)?).await?))
}

/// The Redis backend: a connection and the current session. Wrap it in a [`LockClient`] (the
/// builder's `connect` does) to get a `DistributedLock`.
pub struct RedisBackend {
    config: Arc<RedisConfig>,
    link: Arc<Link>,
    /// Shared with the election observers, whose reads go on the live session.
    session: Arc<SessionSlot<RedisSession>>,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").field("config", &self.config).field("session", &self.current()).finish()
    }
}

/// The `redis` crate's client for `config`: RESP3 (requests and pub/sub messages share one
/// connection), with TLS and credentials as configured.
fn redis_client(config: &RedisConfig) -> Result<redis::Client, LockError> {
    let bad = |reason: String| LockError::invalid_config("address", reason);
    let (host, port) = config
        .address
        .rsplit_once(':')
        .and_then(|(host, port)| {
            Some((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port.parse().ok()?))
        })
        .ok_or_else(|| bad(format!("{:?} is not host:port", config.address)))?;
    let addr = if config.tls {
        // rustls needs a crypto provider; one the application installed first is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let mut settings = RedisConnectionInfo::default().set_db(config.db).set_protocol(ProtocolVersion::RESP3);
    if let Some(user) = &config.user {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password);
    }
    let info = addr.into_connection_info().map_err(|e| bad(e.to_string()))?.set_redis_settings(settings);
    let client = match &config.ca_file {
        Some(ca) => {
            let root = std::fs::read(ca).map_err(|e| {
                LockError::invalid_config("ca", format!("cannot read the CA file {}: {e}", ca.display()))
            })?;
            let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root) };
            redis::Client::build_with_tls(info, certificates)
        }
        None => redis::Client::open(info),
    };
    client.map_err(|e| bad(e.to_string()))
}

impl RedisBackend {
    /// A builder with the defaults.
    ///
    /// ```
    /// let builder = distlock_redis::RedisBackend::builder();
    /// # drop(builder);
    /// ```
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// Connects with validated settings and opens the first session, within the connect timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: see [`RedisBuilder::connect`].
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
    /// let config = distlock_redis::RedisBackend::builder().config()?;
    /// let backend = distlock_redis::RedisBackend::connect(config).await?;
    /// # drop(backend); Ok(()) }
    /// ```
    pub async fn connect(config: RedisConfig) -> Result<Self, LockError> {
        let config = Arc::new(config);
        let link = Arc::new(Link::new(redis_client(&config)?, config.clone()));
        let requests = Arc::new(AtomicU64::new(0));
        let opening = RedisSession::open(link.clone(), config.clone(), requests.clone());
        let session =
            tokio::time::timeout(config.connect_timeout + config.request_timeout, opening).await.map_err(|_| {
                LockError::Unreachable {
                    endpoints: config.endpoint_label(),
                    what: format!("connect (no answer within {:?})", config.connect_timeout),
                    source: None,
                }
            })??;
        Ok(RedisBackend { config, link, session: Arc::new(SessionSlot::new(session)), requests })
    }

    fn current(&self) -> Arc<RedisSession> {
        self.session.current()
    }

    /// Queues for `name` on the live session ([`SessionSlot::on_live`]).
    async fn enqueue(&self, name: &LockName, entry: &EntryRequest, try_only: bool) -> Result<Enqueued, LockError> {
        let open = || RedisSession::open(self.link.clone(), self.config.clone(), self.requests.clone());
        self.session.on_live(open, |session| queue::enqueue(session, name, entry, try_only)).await
    }

    /// The settings.
    ///
    /// ```no_run
    /// # async fn f(locks: distlock_redis::RedisLocks) {
    /// println!("TTL {:?}", locks.backend().config().ttl());
    /// # }
    /// ```
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The current session's id: the member of its entries in every queue.
    ///
    /// ```no_run
    /// # async fn f(locks: distlock_redis::RedisLocks) {
    /// println!("session {}", locks.backend().session_id());
    /// # }
    /// ```
    pub fn session_id(&self) -> String {
        self.current().id.clone()
    }

    /// Requests this client has sent to Redis (keepalives excluded): scripts, session opens.
    ///
    /// ```no_run
    /// # async fn f(locks: distlock_redis::RedisLocks) {
    /// println!("{} requests so far", locks.backend().requests());
    /// # }
    /// ```
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Drops the client's connection now, as a network failure would (for tests of
    /// reconnection): the next request makes a new one.
    #[doc(hidden)]
    pub fn drop_connection(&self) {
        self.link.reset_current();
    }

    /// Every queue key under the prefix (`SCAN`: for operators, it walks the whole keyspace).
    async fn queue_keys(&self) -> Result<Vec<String>, LockError> {
        let session = self.current();
        let pattern = layout::queue_pattern(&self.config.prefix);
        let (mut keys, mut cursor) = (Vec::new(), 0u64);
        loop {
            let (next, batch): (u64, Vec<String>) = session
                .request("list the queues", |mut connection| {
                    let pattern = pattern.clone();
                    async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut connection)
                            .await
                    }
                })
                .await?;
            keys.extend(batch);
            if next == 0 {
                keys.sort();
                keys.dedup();
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn inspect_queues(&self, keys: Vec<String>) -> Result<scripts::Inspected, LockError> {
        let args = keys.into_iter().map(String::into_bytes).collect();
        self.current().script("read the queues", &scripts::INSPECT, args).await
    }
}

/// A listed entry as `inspect` shows it.
fn listed(entry: &scripts::Listed) -> QueueEntry {
    QueueEntry {
        owner: entry.session.clone(),
        token: distlock_core::FencingToken::new(entry.token),
        since: None,
        kind: layout::entry_kind(&entry.record),
    }
}

#[async_trait]
impl LockBackend for RedisBackend {
    async fn acquire(
        &self,
        name: &LockName,
        entry: &EntryRequest,
        on_queued: OnQueued<'_>,
    ) -> Result<ServerHold, LockError> {
        let enqueued = self.enqueue(name, entry, false).await?;
        if let Some(queued) = enqueued.entry() {
            on_queued(queued);
        }
        let place = match enqueued {
            Enqueued::Granted(place) => place,
            Enqueued::Waiting(waiting) => waiting.until_granted().await?,
            Enqueued::Busy => unreachable_busy(name)?,
        };
        Ok(hold::grant(place))
    }

    async fn try_acquire(&self, name: &LockName, entry: &EntryRequest) -> Result<Option<ServerHold>, LockError> {
        match self.enqueue(name, entry, true).await? {
            Enqueued::Granted(place) => Ok(Some(hold::grant(place))),
            Enqueued::Busy => Ok(None),
            // A try's entry never waits; dropping it removes it.
            Enqueued::Waiting(_) => Ok(None),
        }
    }

    async fn leader(&self, name: &LockName) -> Result<Option<Leader>, LockError> {
        let session = self.current();
        election::read_leader(&self.link, &self.config, &session.life, || session.count(), name).await
    }

    async fn observe(&self, name: &LockName) -> Result<Box<dyn LeaderFeed>, LockError> {
        let (link, config, requests) = (self.link.clone(), self.config.clone(), self.requests.clone());
        let channel =
            election::LeaderChannel::subscribe(link, config, requests, self.session.clone(), name.clone()).await?;
        Ok(Box::new(channel))
    }

    async fn inspect(&self, name: &LockName) -> Result<LockInfo, LockError> {
        let keys = layout::QUEUE_KINDS
            .iter()
            .map(|kind| layout::queue_key(&self.config.prefix, kind, name.as_str()))
            .collect();
        let inspected = self.inspect_queues(keys).await?;
        let entries = inspected.0.first().map(|(_, entries)| entries.iter().map(listed).collect()).unwrap_or_default();
        Ok(LockInfo::from_queue(name.clone(), entries))
    }

    async fn inspect_all(&self, under: Option<&LockName>) -> Result<Vec<LockInfo>, LockError> {
        let keys = self.queue_keys().await?;
        let inspected = self.inspect_queues(keys).await?;
        let within = |name: &str| match under {
            None => true,
            Some(under) => {
                name == under.as_str() || name.strip_prefix(under.as_str()).is_some_and(|r| r.starts_with('/'))
            }
        };
        let mut locks = Vec::new();
        for (key, entries) in &inspected.0 {
            let Some(name) = layout::name_of(&self.config.prefix, key).filter(|name| within(name)) else { continue };
            if let Ok(name) = LockName::new(name) {
                locks.push(LockInfo::from_queue(name, entries.iter().map(listed).collect()));
            }
        }
        Ok(locks)
    }

    async fn settle(&self, name: &LockName) {
        let session = self.current();
        // Every queue of the name: the timed-out wait was in one of them.
        for kind in layout::QUEUE_KINDS {
            let queue = layout::queue_key(&self.config.prefix, kind, name.as_str());
            session.cleanups.wait(&queue, &session.life).await;
        }
    }

    async fn close(&self) -> Result<(), LockError> {
        match self.session.close() {
            Some(session) => session.end_on_server().await,
            None => Ok(()),
        }
    }

    fn session_state(&self) -> SessionState {
        self.current().life.state()
    }

    fn backend_name(&self) -> &'static str {
        "redis"
    }
}

/// A queuing that was not a try answered as a try: a bug in the script, reported, not panicked.
fn unreachable_busy(name: &LockName) -> Result<queue::Place, LockError> {
    Err(LockError::Backend {
        backend: "redis",
        op: format!("queue for {:?}", name.as_str()),
        retryable: true,
        source: "the queuing script answered as for a try; call lock again".into(),
    })
}
