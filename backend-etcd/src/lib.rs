//! # distlock-etcd
//!
//! The etcd backend of distlock: one lease per client, kept alive by one background task, and
//! locks in the key layout of etcd's Go `concurrency.Mutex` (`<prefix>/<name>/<lease-id hex>`,
//! the holder is the lowest create revision), so Go services and `etcdctl lock` exclude each
//! other with distlock on the same name.
//!
//! - **Acquire**: one Txn creates our key if absent and reads the owner and the key just below
//!   ours. Where the session has not met others in the lock's queue lately, a cheaper Txn goes
//!   first: it creates our key only if the lock's whole key range is empty, with no read, and
//!   makes us the holder (found others, the reading Txn follows). Uncontended, a lock costs two
//!   requests: that Txn and the release's.
//! - **Release**: one Txn deletes our key if it still has our create revision. A holder that
//!   waited also writes, at the same revision, its release marker for the lock,
//!   `<prefix>//released/<name>//<lease-id hex>` (on our lease; the empty path segment keeps it
//!   out of every lock's queue, so Go's Mutex never sees it). A holder first from its key's
//!   creation writes none: every waiter behind it read it as the owner.
//! - **Wait**: each waiter watches its predecessor's key and that key's release marker. A write
//!   of the marker after the key's creation is the holder's release: we are first the moment we
//!   hear it, with no request, whatever the length of the queue, so a hand-off costs the
//!   release alone. The key's deletion without the marker (a waiter that left, an expired
//!   lease, a Go holder) is explained by one serializable Txn that confirms our key still
//!   exists (so the lease lives: etcd issue 11456) and reads the keys below ours. Being first
//!   is monotonic (no key can appear below ours later), so a member's local answer will do
//!   while the lease clock says the lease is alive. If the predecessor was the owner when we
//!   read, its deletion is enough. Watches start "from now" and are kept for the next wait
//!   behind the same key; one that etcd may not have synced yet is backed by reads; broken
//!   ones are re-created from the revision they had reached; a compaction makes the waiter
//!   re-read.
//! - **One stream**: all watches of a client (waiters' and held locks') share one watch stream,
//!   as in etcd's Go client; a client holding 10,000 locks has one lease and one watch stream.
//! - **Fencing token**: our key's create revision. [`EtcdBackend::fence`] turns a guard into a
//!   `Compare` for your own Txn.
//! - **Lost**: fires when the keepalive says the lease is gone, when our key is deleted by
//!   someone else, and when no keepalive was acknowledged for TTL minus a margin.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
//! use distlock_core::DistributedLock;
//!
//! let locks = distlock_etcd::EtcdBackend::builder()
//!     .endpoints(["10.0.0.1:2379", "10.0.0.2:2379"])
//!     .prefix("myapp")
//!     .connect()
//!     .await?;
//! let guard = locks.lock("jobs/nightly-report").await?;
//! guard.release().await?;
//! # Ok(()) }
//! ```

mod config;
mod connection;
mod election;
mod errors;
mod hold;
mod key_generations;
pub mod layout;
mod permit_mailbox;
mod place;
mod queue;
mod release_marker;
mod session;
mod watch;
mod watch_hub;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use distlock_core::{
    backend::{EntryRequest, LeaderFeed, LockBackend, OnQueued, Recipe, ServerHold, SessionSlot},
    EntryKind, Leader, LockClient, LockError, LockGuard, LockInfo, LockName, LockUrl, QueueEntry, SessionState,
};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, SortOrder, SortTarget};

pub use config::{
    EtcdBuilder, EtcdConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PREFIX, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TTL,
};
pub use etcd_client;
use session::EtcdSession;

/// A distlock client on etcd.
pub type EtcdLocks = LockClient<EtcdBackend>;

/// Connects to the etcd cluster an `etcd://` or `etcds://` URL names (see [`EtcdConfig::from_url`]).
///
/// # Cancel safety
/// Cancel safe: see [`EtcdBuilder::connect`].
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
/// let url = distlock_core::LockUrl::parse("etcd://127.0.0.1:2379/myapp?ttl=10s")?;
/// let locks = distlock_etcd::connect_url(&url).await?;
/// # drop(locks); Ok(()) }
/// ```
pub async fn connect_url(url: &LockUrl) -> Result<EtcdLocks, LockError> {
    Ok(LockClient::new(EtcdBackend::connect(EtcdConfig::from_url(url)?).await?))
}

/// The etcd backend: a connection and the current session (lease). Wrap it in a
/// [`LockClient`] (the builder's `connect` does) to get a `DistributedLock`.
pub struct EtcdBackend {
    config: Arc<EtcdConfig>,
    client: Client,
    session: SessionSlot<EtcdSession>,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend").field("config", &self.config).field("session", &self.current()).finish()
    }
}

impl EtcdBackend {
    /// A builder with the defaults.
    ///
    /// ```
    /// let builder = distlock_etcd::EtcdBackend::builder();
    /// # drop(builder);
    /// ```
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// Connects with validated settings and grants the first lease, within the connect timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: see [`EtcdBuilder::connect`].
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), distlock_core::LockError> {
    /// let config = distlock_etcd::EtcdBackend::builder().config()?;
    /// let backend = distlock_etcd::EtcdBackend::connect(config).await?;
    /// # drop(backend); Ok(()) }
    /// ```
    pub async fn connect(config: EtcdConfig) -> Result<Self, LockError> {
        let config = Arc::new(config);
        let scheme = if config.tls { "https" } else { "http" };
        let endpoints: Vec<String> = config.endpoints.iter().map(|e| format!("{scheme}://{e}")).collect();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(config.ttl / 4, config.ttl / 4);
        if let Some((user, password)) = &config.user {
            options = options.with_user(user, password);
        }
        let mut tls_options = None;
        if config.tls {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(config::read_pem("ca", "CA", ca)?));
            } else {
                tls = tls.with_enabled_roots();
            }
            if let Some((cert, key)) = &config.client_identity {
                let (cert, key) = (
                    config::read_pem("cert", "client certificate", cert)?,
                    config::read_pem("key", "client key", key)?,
                );
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls.clone());
            tls_options = Some(tls);
        }
        let requests = Arc::new(AtomicU64::new(0));
        let connecting = async {
            let client = match endpoints.as_slice() {
                [one] => match connection::channel(one, &config, tls_options) {
                    Ok(channel) => Client::from_channel(channel, Some(options)).await,
                    Err(e) => Err(e.into()),
                },
                _ => Client::connect(&endpoints, Some(options)).await,
            }
            .map_err(|e| crate::errors::request_error("connect", &config.endpoints_label(), e))?;
            let session = EtcdSession::open(client.clone(), config.clone(), requests.clone())
                .await
                .map_err(|e| crate::errors::client_certificate_hint(e, &config))?;
            Ok::<_, LockError>((client, session))
        };
        let (client, session) = tokio::time::timeout(config.connect_timeout + config.request_timeout, connecting)
            .await
            .map_err(|_| LockError::Unreachable {
                endpoints: config.endpoints_label(),
                what: format!("connect (no answer within {:?})", config.connect_timeout),
                source: None,
            })??;
        Ok(EtcdBackend { config, client, session: SessionSlot::new(session), requests })
    }

    fn current(&self) -> Arc<EtcdSession> {
        self.session.current()
    }

    /// Queues for `name` on the live session ([`SessionSlot::on_live`]).
    async fn enqueue(&self, name: &LockName, entry: &EntryRequest) -> Result<queue::Queued, LockError> {
        let open = || EtcdSession::open(self.client.clone(), self.config.clone(), self.requests.clone());
        self.session.on_live(open, |session| queue::enqueue(session, name, entry)).await
    }

    /// The settings.
    ///
    /// ```no_run
    /// # async fn f(locks: distlock_etcd::EtcdLocks) {
    /// println!("TTL {:?}", locks.backend().config().ttl());
    /// # }
    /// ```
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The underlying `etcd-client` client, for your own requests (for example a fenced Txn).
    ///
    /// ```no_run
    /// # async fn f(locks: distlock_etcd::EtcdLocks) {
    /// let mut client = locks.backend().client();
    /// # let _ = client.get("k", None).await; }
    /// ```
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The current session's lease id.
    ///
    /// ```no_run
    /// # async fn f(locks: distlock_etcd::EtcdLocks) {
    /// println!("lease {:x}", locks.backend().lease_id());
    /// # }
    /// ```
    pub fn lease_id(&self) -> i64 {
        self.current().lease
    }

    /// Requests this client has sent to etcd (keepalives excluded): Txn, Range, DeleteRange,
    /// watch creations, lease grants.
    ///
    /// ```no_run
    /// # async fn f(locks: distlock_etcd::EtcdLocks) {
    /// println!("{} requests so far", locks.backend().requests());
    /// # }
    /// ```
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The key this client's current session holds or waits with for `name`:
    /// `<prefix>/<name>/<lease-id hex>`.
    ///
    /// ```no_run
    /// # async fn f(locks: distlock_etcd::EtcdLocks) {
    /// println!("{}", locks.backend().lock_key(&distlock_core::LockName::new("a").unwrap()));
    /// # }
    /// ```
    pub fn lock_key(&self, name: &LockName) -> String {
        queue::queue_key(&self.current(), name)
    }

    /// A `Compare` that holds only while `guard`'s hold is still the holder's key with its
    /// create revision (the fencing token). Put it in your own Txn's `when` and the write
    /// happens only if the lock is still held: a paused, stale holder's write is refused.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use distlock_core::DistributedLock;
    /// use distlock_etcd::etcd_client::{Txn, TxnOp};
    ///
    /// let locks = distlock_etcd::EtcdBackend::builder().connect().await?;
    /// let guard = locks.lock("orders/42").await?;
    /// let txn = Txn::new()
    ///     .when([locks.backend().fence(&guard)])
    ///     .and_then([TxnOp::put("orders/42/state", "paid", None)]);
    /// let applied = locks.backend().client().txn(txn).await?.succeeded();
    /// assert!(applied, "the write happens only while we hold the lock");
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn fence(&self, guard: &LockGuard) -> Compare {
        Compare::create_revision(self.lock_key(guard.name()), CompareOp::Equal, guard.fencing_token().get() as i64)
    }
}

#[async_trait]
impl LockBackend for EtcdBackend {
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
        let prefix = self.config.lock_prefix(name.as_str());
        election::leader(&self.current(), &prefix).await
    }

    async fn observe(&self, name: &LockName) -> Result<Box<dyn LeaderFeed>, LockError> {
        let prefix = self.config.lock_prefix(name.as_str());
        let watch = election::LeaderWatch::new(self.client.clone(), self.config.endpoints_label(), prefix);
        Ok(Box::new(watch))
    }

    async fn inspect(&self, name: &LockName) -> Result<LockInfo, LockError> {
        // The lock's queue, then the read-write lock's, then the semaphore's, until one has
        // entries of the name: a lock's inspect costs one read.
        let ranges = QUEUE_RECIPES.map(|recipe| self.config.queue_prefix(name.as_str(), recipe));
        let of_name = |response: &etcd_client::GetResponse| -> Vec<QueueEntry> {
            self.entries(response, |of, _| of == name.as_str()).into_iter().map(|(_, entry)| entry).collect()
        };
        let read = self.read_queues("read a queue", &ranges, |response| !of_name(response).is_empty()).await?;
        let entries = read.last().map(|(_, response)| of_name(response)).unwrap_or_default();
        Ok(LockInfo::from_queue(name.clone(), entries))
    }

    async fn inspect_all(&self, under: Option<&LockName>) -> Result<Vec<LockInfo>, LockError> {
        let ranges =
            QUEUE_RECIPES.map(|recipe| layout::queues_under(&self.config.prefix, under.map(LockName::as_str), recipe));
        let read = self.read_queues("read the queues", &ranges, |_| false).await?;
        // One queue per name and kind of queue (a read-write lock's readers and writers are one);
        // the lock range (everything under `<prefix>/`) holds the other queues' keys too.
        let mut queues: std::collections::BTreeMap<(LockName, usize), Vec<QueueEntry>> = Default::default();
        for (order, response) in &read {
            for (name, entry) in self.entries(response, |_, kind| queue_order(kind) == *order) {
                if let Ok(name) = LockName::new(name) {
                    queues.entry((name, *order)).or_default().push(entry);
                }
            }
        }
        Ok(queues.into_iter().map(|((name, _), queue)| LockInfo::from_queue(name, queue)).collect())
    }

    async fn settle(&self, name: &LockName) {
        let session = self.current();
        // Every queue of the name: the timed-out wait was in one of them.
        for recipe in QUEUE_RECIPES {
            let queue_prefix = session.config.queue_prefix(name.as_str(), recipe);
            session.cleanups.wait(&queue_prefix, &session.life).await;
        }
    }

    async fn close(&self) -> Result<(), LockError> {
        match self.session.close() {
            Some(session) => session.revoke().await,
            None => Ok(()),
        }
    }

    fn session_state(&self) -> SessionState {
        self.current().life.state()
    }

    fn backend_name(&self) -> &'static str {
        "etcd"
    }
}

impl EtcdBackend {
    /// The keys under `prefix` (keys only), oldest first: lock queues in queue order.
    /// Reads `ranges` in turn (see [`EtcdBackend::keys_under`]) until a response is `enough`:
    /// each read one with its index. A range this user may not read (a role granted one
    /// recipe's keys only) counts as empty, unless none may be read: then the refusal.
    async fn read_queues(
        &self,
        op: &str,
        ranges: &[String],
        enough: impl Fn(&etcd_client::GetResponse) -> bool,
    ) -> Result<Vec<(usize, etcd_client::GetResponse)>, LockError> {
        let (mut read, mut refused) = (Vec::new(), None);
        for (i, range) in ranges.iter().enumerate() {
            match self.keys_under(op, range).await {
                Ok(response) => {
                    let done = enough(&response);
                    read.push((i, response));
                    if done {
                        break;
                    }
                }
                Err(error @ LockError::Unauthorized { .. }) => {
                    refused.get_or_insert(error);
                }
                Err(error) => return Err(error),
            }
        }
        match refused {
            Some(error) if read.is_empty() => Err(error),
            _ => Ok(read),
        }
    }

    /// The queue entries in `response` that `keep` (given the name and kind) wants, each with
    /// its name; keys that are no queue's (release markers, foreign keys) are skipped.
    fn entries<'r>(
        &self,
        response: &'r etcd_client::GetResponse,
        keep: impl Fn(&str, EntryKind) -> bool,
    ) -> Vec<(&'r str, QueueEntry)> {
        let entry = |kv: &'r etcd_client::KeyValue| {
            let (name, kind) = layout::entry_of(&self.config.prefix, kv.key_str().ok()?)?;
            keep(name, kind).then(|| (name, listed(kv, kind)))
        };
        response.kvs().iter().filter_map(entry).collect()
    }

    async fn keys_under(&self, op: &str, prefix: &str) -> Result<etcd_client::GetResponse, LockError> {
        let session = self.current();
        let options = GetOptions::new().with_prefix().with_keys_only().with_sort(SortTarget::Create, SortOrder::Ascend);
        session
            .request(op, &session.kv, |mut c| {
                let (prefix, options) = (prefix.to_owned(), options.clone());
                async move { c.get(prefix, Some(options)).await }
            })
            .await
    }
}

/// One recipe of each of a name's queues, in the order `inspect` reads them: the lock's (and the
/// election's), the read-write lock's, the semaphore's.
const QUEUE_RECIPES: [Recipe; 3] = [Recipe::Lock, Recipe::Read, Recipe::Permit(std::num::NonZeroU32::MIN)];

/// Which of a name's queues an entry of `kind` is in: the lock's, the read-write lock's, the
/// semaphore's.
fn queue_order(kind: EntryKind) -> usize {
    match kind {
        EntryKind::Read | EntryKind::Write => 1,
        EntryKind::Permit(_) => 2,
        _ => 0,
    }
}

/// A queue key as `inspect` lists it: the key is the owner, its create revision the token.
fn listed(kv: &etcd_client::KeyValue, kind: EntryKind) -> QueueEntry {
    QueueEntry {
        owner: kv.key_str().unwrap_or_default().to_owned(),
        token: distlock_core::FencingToken::new(kv.create_revision() as u64),
        since: None,
        kind,
    }
}
