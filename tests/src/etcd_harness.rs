//! The conformance harness of the etcd backend: clients with their own sessions on a real etcd
//! (shared or a 3-node cluster), a unique key prefix per test, fault injection through a TCP
//! proxy per member, and lease revocation as Curator's `KillSession`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use distlock_core::conformance::{Faults, Harness};
use distlock_core::{DistributedLock, LockError};
use distlock_etcd::etcd_client::{EventType, GetOptions, SortOrder, SortTarget, WatchOptions};
use distlock_etcd::{EtcdBackend, EtcdLocks};

use crate::etcd::connect;
use crate::{ProxyMode, ProxySet};

/// One test's view of an etcd cluster.
pub struct EtcdHarness {
    endpoints: Vec<String>,
    prefix: String,
    ttl: Duration,
    admin: distlock_etcd::etcd_client::Client,
    clients: Mutex<Vec<Arc<EtcdLocks>>>,
}

impl EtcdHarness {
    /// A harness on `endpoints` with a fresh prefix and a 2 s TTL.
    pub async fn new(endpoints: Vec<String>) -> Self {
        crate::trace_from_env();
        let admin = connect(&endpoints).await.expect("an admin client of the test etcd");
        EtcdHarness {
            endpoints,
            prefix: format!("distlock-test/{}", uuid::Uuid::new_v4()),
            ttl: Duration::from_secs(2),
            admin,
            clients: Mutex::default(),
        }
    }

    /// The same harness, its clients' leases living `ttl` instead of 2 s.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The key prefix of this harness's locks.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The settings of a client of this harness through `endpoints`.
    pub fn builder(&self, endpoints: &[String]) -> distlock_etcd::EtcdBuilder {
        EtcdBackend::builder()
            .endpoints(endpoints.iter().cloned())
            .prefix(self.prefix.clone())
            .ttl(self.ttl)
            .connect_timeout(Duration::from_secs(3))
            .request_timeout(Duration::from_secs(1))
    }

    async fn connect_via(&self, endpoints: &[String], ttl: Duration) -> Result<Arc<EtcdLocks>, LockError> {
        let locks = Arc::new(self.builder(endpoints).ttl(ttl).connect().await?);
        self.clients.lock().unwrap().push(locks.clone());
        Ok(locks)
    }
}

/// Faults of one client whose every connection goes through a proxy.
struct EtcdFaults {
    locks: Arc<EtcdLocks>,
    proxies: Arc<ProxySet>,
    admin: distlock_etcd::etcd_client::Client,
    prefix: String,
    dropped: Arc<AtomicU64>,
}

#[async_trait]
impl Faults for EtcdFaults {
    async fn cut(&self) {
        self.proxies.cut();
    }

    async fn heal(&self) {
        self.proxies.heal();
    }

    async fn expire_session(&self) {
        let mut admin = self.admin.clone();
        admin.lease_revoke(self.locks.backend().lease_id()).await.expect("revoke the client's lease");
    }

    async fn drop_next_reply(&self) {
        // Swallow replies until the server has created this client's key, then reset the
        // connections: the client's Txn was applied, but it never heard so.
        // Our key, of any recipe: it names our lease id (see distlock_etcd::layout).
        let lease = format!("{:x}", self.locks.backend().lease_id());
        let ours = move |key: &str| distlock_etcd::layout::lease_of(key) == Some(lease.as_str());
        let mut admin = self.admin.clone();
        let mut stream = admin
            .watch(format!("{}/", self.prefix), Some(WatchOptions::new().with_prefix()))
            .await
            .expect("an admin watch");
        self.proxies.set_mode(ProxyMode::DropReplies);
        let (proxies, dropped) = (self.proxies.clone(), self.dropped.clone());
        tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                let created = response.events().iter().any(|e| {
                    e.event_type() == EventType::Put && e.kv().and_then(|kv| kv.key_str().ok()).is_some_and(&ours)
                });
                if created {
                    // Counted first: the client may hear of the reset and finish before this task runs on.
                    dropped.fetch_add(1, Ordering::SeqCst);
                    proxies.reset_connections();
                    return;
                }
            }
        });
    }

    async fn dropped_replies(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Harness for EtcdHarness {
    async fn client(&self) -> Arc<dyn DistributedLock> {
        self.connect_via(&self.endpoints, self.ttl).await.expect("an etcd lock client")
    }

    async fn faulty_client(&self) -> (Arc<dyn DistributedLock>, Box<dyn Faults>) {
        let proxies = ProxySet::start(&self.endpoints).await.expect("proxies in front of the servers");
        let through = proxies.endpoints();
        let locks = self.connect_via(&through, self.ttl).await.expect("an etcd lock client behind a proxy");
        let faults = EtcdFaults {
            locks: locks.clone(),
            proxies: Arc::new(proxies),
            admin: self.admin.clone(),
            prefix: self.prefix.clone(),
            dropped: Arc::default(),
        };
        (locks, Box::new(faults))
    }

    async fn client_with_ttl(&self, ttl: Duration) -> Result<Arc<dyn DistributedLock>, LockError> {
        Ok(self.connect_via(&self.endpoints, ttl).await?)
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn requests(&self) -> u64 {
        self.clients.lock().unwrap().iter().map(|c| c.backend().requests()).sum()
    }

    async fn delete_holder(&self, name: &str) {
        let mut admin = self.admin.clone();
        let queue = distlock_etcd::layout::queue_prefix(&self.prefix, name);
        let options = GetOptions::new().with_prefix().with_keys_only().with_sort(SortTarget::Create, SortOrder::Ascend);
        let keys = admin.get(queue.as_str(), Some(options)).await.expect("read the queue");
        // The first key of the queue itself: keys of locks named below this one share the range.
        let holder = keys.kvs().iter().find(|kv| distlock_etcd::layout::is_queue_key(&queue, kv.key()));
        let key = holder.expect("a holder to delete").key().to_vec();
        admin.delete(key, None).await.expect("delete the holder's key");
    }

    /// The keys under the prefix, release markers and permit marks left out: neither queues
    /// anyone or blocks anyone. A marker goes with the lease of the session that last released
    /// the lock (`release_markers_go_with_the_session` in the etcd backend's recipe checks
    /// that), a mark with its permit's release or its session's lease
    /// (`a_permits_mark_goes_with_its_release` there).
    async fn leftovers(&self) -> Vec<String> {
        let mut admin = self.admin.clone();
        let markers = distlock_etcd::layout::release_marker_prefix(&self.prefix);
        let marks = distlock_etcd::layout::permit_mailboxes(&self.prefix);
        match admin.get(format!("{}/", self.prefix), Some(GetOptions::new().with_prefix().with_keys_only())).await {
            Ok(r) => r
                .kvs()
                .iter()
                .map(|kv| kv.key_str().unwrap_or("?").to_owned())
                .filter(|key| !key.starts_with(&markers) && !key.starts_with(&marks))
                .collect(),
            Err(e) => vec![format!("cannot read the prefix: {e}")],
        }
    }
}
