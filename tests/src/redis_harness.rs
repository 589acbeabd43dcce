//! The conformance harness of the Redis backend: clients with their own sessions on a real
//! Redis (a primary alone, or with a replica), a unique key prefix per test, fault injection
//! through a TCP proxy, and the deletion of a session's key as Curator's `KillSession`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use distlock_core::conformance::{Faults, Harness};
use distlock_core::{DistributedLock, LockError};
use distlock_redis::{RedisBackend, RedisLocks};
use redis::aio::MultiplexedConnection;

use crate::{ProxyMode, ProxySet};

/// One test's view of a Redis primary.
pub struct RedisHarness {
    endpoint: String,
    prefix: String,
    ttl: Duration,
    /// The replicas each client waits for (`replicas=N`; 0: none).
    replicas: u32,
    admin: MultiplexedConnection,
    clients: Mutex<Vec<Arc<RedisLocks>>>,
}

impl RedisHarness {
    /// A harness on the primary at `endpoint` with a fresh prefix and a 2 s TTL.
    pub async fn new(endpoint: String) -> Self {
        Self::waiting_for_replicas(endpoint, 0).await
    }

    /// A harness whose clients wait for `replicas` replicas to acknowledge each grant, release
    /// and renewal (`replicas=N`).
    pub async fn waiting_for_replicas(endpoint: String, replicas: u32) -> Self {
        crate::trace_from_env();
        let admin = redis::Client::open(format!("redis://{endpoint}"))
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("an admin connection to the test Redis");
        RedisHarness {
            endpoint,
            prefix: format!("distlock-test-{}", uuid::Uuid::new_v4().simple()),
            ttl: Duration::from_secs(2),
            replicas,
            admin,
            clients: Mutex::default(),
        }
    }

    /// The key prefix of this harness's locks.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The settings of a client of this harness through `endpoint`.
    pub fn builder(&self, endpoint: &str) -> distlock_redis::RedisBuilder {
        RedisBackend::builder()
            .address(endpoint)
            .prefix(self.prefix.clone())
            .ttl(self.ttl)
            .connect_timeout(Duration::from_secs(3))
            .request_timeout(Duration::from_secs(1))
            .replicas(self.replicas)
    }

    async fn connect_via(&self, endpoint: &str, ttl: Duration) -> Result<Arc<RedisLocks>, LockError> {
        let locks = Arc::new(self.builder(endpoint).ttl(ttl).connect().await?);
        self.clients.lock().unwrap().push(locks.clone());
        Ok(locks)
    }

    /// The entries and stray keys under the prefix (see [`Harness::leftovers`]).
    async fn entries(&self) -> redis::RedisResult<Vec<String>> {
        let prefix = &self.prefix;
        let mut left = Vec::new();
        let members = |key: &str, command: &str| {
            let mut admin = self.admin.clone();
            let (key, command) = (key.to_owned(), command.to_owned());
            async move {
                let listed: Vec<String> = match command.as_str() {
                    "ZRANGE" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query_async(&mut admin).await?,
                    other => redis::cmd(other).arg(&key).query_async(&mut admin).await?,
                };
                Ok::<_, redis::RedisError>(listed)
            }
        };
        for key in self.keys().await? {
            let Some(rest) = key.strip_prefix(prefix.as_str()).and_then(|r| r.strip_prefix(':')) else { continue };
            if let Some(queue) = rest.strip_prefix("q:") {
                left.extend(members(&key, "ZRANGE").await?.into_iter().map(|sid| format!("{prefix}:q:{queue} {sid}")));
            } else if let Some(queue) = rest.strip_prefix("e:") {
                let queued: Vec<String> = members(&format!("{prefix}:q:{queue}"), "ZRANGE").await?;
                let records = members(&key, "HKEYS").await?;
                left.extend(
                    records.into_iter().filter(|sid| !queued.contains(sid)).map(|sid| format!("{key} {sid} (record)")),
                );
            } else if !["s:", "h:", "t:"].iter().any(|kept| rest.starts_with(kept)) {
                left.push(key);
            }
        }
        Ok(left)
    }

    /// The keys under this harness's prefix.
    pub async fn keys(&self) -> redis::RedisResult<Vec<String>> {
        let mut admin = self.admin.clone();
        redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query_async(&mut admin).await
    }
}

/// Faults of one client whose connection goes through a proxy.
struct RedisFaults {
    locks: Arc<RedisLocks>,
    proxies: Arc<ProxySet>,
    admin: MultiplexedConnection,
    prefix: String,
    dropped: Arc<AtomicU64>,
}

#[async_trait]
impl Faults for RedisFaults {
    async fn cut(&self) {
        self.proxies.cut();
    }

    async fn heal(&self) {
        self.proxies.heal();
    }

    async fn expire_session(&self) {
        let mut admin = self.admin.clone();
        let key = distlock_redis::layout::session_key(&self.prefix, &self.locks.backend().session_id());
        let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut admin).await.expect("delete the session's key");
    }

    async fn drop_next_reply(&self) {
        // Swallow replies until the server holds an entry of this client's session (its index has a
        // field besides the one made with the session), then reset
        // the connection: the client's script ran, but it never heard so.
        self.proxies.set_mode(ProxyMode::DropReplies);
        let (proxies, dropped, mut admin) = (self.proxies.clone(), self.dropped.clone(), self.admin.clone());
        let entries = format!("{}:h:{}", self.prefix, self.locks.backend().session_id());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while tokio::time::Instant::now() < deadline {
                let held: i64 = redis::cmd("HLEN").arg(&entries).query_async(&mut admin).await.unwrap_or(0);
                if held > 1 {
                    dropped.fetch_add(1, Ordering::SeqCst);
                    proxies.reset_connections();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    async fn dropped_replies(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Harness for RedisHarness {
    async fn client(&self) -> Arc<dyn DistributedLock> {
        self.connect_via(&self.endpoint, self.ttl).await.expect("a Redis lock client")
    }

    async fn faulty_client(&self) -> (Arc<dyn DistributedLock>, Box<dyn Faults>) {
        let proxies = ProxySet::start(std::slice::from_ref(&self.endpoint)).await.expect("a proxy in front of Redis");
        let through = proxies.endpoints();
        let locks = self.connect_via(&through[0], self.ttl).await.expect("a Redis lock client behind a proxy");
        let faults = RedisFaults {
            locks: locks.clone(),
            proxies: Arc::new(proxies),
            admin: self.admin.clone(),
            prefix: self.prefix.clone(),
            dropped: Arc::default(),
        };
        (locks, Box::new(faults))
    }

    async fn client_with_ttl(&self, ttl: Duration) -> Result<Arc<dyn DistributedLock>, LockError> {
        Ok(self.connect_via(&self.endpoint, ttl).await?)
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn requests(&self) -> u64 {
        self.clients.lock().unwrap().iter().map(|c| c.backend().requests()).sum()
    }

    /// As an operator would: removes the first entry of the name's queue (`ZREM`), and its record.
    async fn delete_holder(&self, name: &str) {
        let mut admin = self.admin.clone();
        for kind in distlock_redis::layout::QUEUE_KINDS {
            let queue = distlock_redis::layout::queue_key(&self.prefix, kind, name);
            let first: Vec<String> =
                redis::cmd("ZRANGE").arg(&queue).arg(0).arg(0).query_async(&mut admin).await.expect("read the queue");
            if let Some(session) = first.first() {
                let _: i64 = redis::cmd("ZREM").arg(&queue).arg(session).query_async(&mut admin).await.expect("ZREM");
                return;
            }
        }
        panic!("no holder of {name:?} to delete");
    }

    /// One line per entry left under the prefix (`<queue key> <session>`), and any other key but
    /// the sessions' own (a live client's session is no entry, as an etcd lease is none; its key
    /// and index go with it) and the token counters (kept so that tokens never repeat:
    /// docs/redis.md). A queue's record shows only if its entry is gone.
    async fn leftovers(&self) -> Vec<String> {
        match self.entries().await {
            Ok(entries) => entries,
            Err(e) => vec![format!("cannot read the keys: {e}")],
        }
    }
}
