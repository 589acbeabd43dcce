//! The conformance harness of the ZooKeeper backend: clients with their own sessions on a real
//! ZooKeeper (shared or a 3-node ensemble), a unique chroot per test, fault injection through a
//! TCP proxy per server, and Curator's `KillSession` (attach to the session, then close it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use distlock_core::conformance::{Faults, Harness};
use distlock_core::{DistributedLock, LockError};
use distlock_zk::zookeeper_client::{self, AddWatchMode, EventType};
use distlock_zk::{ZkBackend, ZkLocks};

use crate::zk::connect;
use crate::{ProxyMode, ProxySet};

/// One test's view of a ZooKeeper ensemble.
pub struct ZkHarness {
    hosts: Vec<String>,
    chroot: String,
    session_timeout: Duration,
    admin: zookeeper_client::Client,
    clients: Mutex<Vec<Arc<ZkLocks>>>,
}

/// The queue znodes of every recipe among `children`, in queue order: the backend's own layout.
pub fn lock_znodes(children: Vec<String>) -> Vec<String> {
    distlock_zk::layout::queue_order(children, None)
}

impl ZkHarness {
    /// A harness on `hosts` with a fresh chroot and a 2 s session timeout.
    pub async fn new(hosts: Vec<String>) -> Self {
        crate::trace_from_env();
        let admin =
            connect(&hosts.join(","), Duration::from_secs(10)).await.expect("an admin client of the test ZooKeeper");
        ZkHarness {
            hosts,
            chroot: format!("/distlock-test-{}", uuid::Uuid::new_v4()),
            session_timeout: Duration::from_secs(2),
            admin,
            clients: Mutex::default(),
        }
    }

    /// The chroot of this harness's locks.
    pub fn chroot(&self) -> &str {
        &self.chroot
    }

    /// An admin client without chroot.
    pub fn admin(&self) -> &zookeeper_client::Client {
        &self.admin
    }

    /// The settings of a client of this harness through `hosts`.
    pub fn builder(&self, hosts: &[String]) -> distlock_zk::ZkBuilder {
        ZkBackend::builder()
            .hosts(hosts.iter().cloned())
            .chroot(self.chroot.clone())
            .session_timeout(self.session_timeout)
            .connect_timeout(Duration::from_secs(5))
    }

    async fn connect_via(&self, hosts: &[String], timeout: Duration) -> Result<Arc<ZkLocks>, LockError> {
        let locks = Arc::new(self.builder(hosts).session_timeout(timeout).connect().await?);
        self.clients.lock().unwrap().push(locks.clone());
        Ok(locks)
    }

    /// Every lock znode under the chroot, as full paths.
    pub async fn lock_nodes(&self) -> Result<Vec<String>, zookeeper_client::Error> {
        lock_nodes_under(&self.admin, &self.chroot).await
    }
}

/// Every lock znode under `root`, as full paths.
async fn lock_nodes_under(
    admin: &zookeeper_client::Client,
    root: &str,
) -> Result<Vec<String>, zookeeper_client::Error> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let children = match admin.get_children(&dir).await {
            Ok((children, _)) => children,
            Err(zookeeper_client::Error::NoNode) => continue,
            Err(e) => return Err(e),
        };
        for child in children {
            let path = format!("{dir}/{child}");
            if lock_znodes(vec![child]).is_empty() {
                dirs.push(path);
            } else {
                found.push(path);
            }
        }
    }
    Ok(found)
}

/// Faults of one client whose every connection goes through a proxy.
struct ZkFaults {
    locks: Arc<ZkLocks>,
    proxies: Arc<ProxySet>,
    hosts: Vec<String>,
    admin: zookeeper_client::Client,
    chroot: String,
    dropped: Arc<AtomicU64>,
}

impl ZkFaults {
    async fn lock_nodes_of(&self, root: &str) -> Result<Vec<String>, zookeeper_client::Error> {
        lock_nodes_under(&self.admin, root).await
    }
}

#[async_trait]
impl Faults for ZkFaults {
    async fn cut(&self) {
        self.proxies.cut();
    }

    async fn heal(&self) {
        self.proxies.heal();
    }

    async fn expire_session(&self) {
        // Curator's KillSession: attach a second client to the session, then close it. The client
        // is cut off meanwhile, so it cannot win the session back before the close lands.
        self.cut().await;
        let client = self.locks.backend().client().expect("an open client");
        let (session, session_id) = (client.session().clone(), client.session_id());
        drop(client);
        let hosts = self.hosts.join(",");
        let killer = crate::retry_until(Duration::from_secs(10), || {
            zookeeper_client::Client::connector()
                .with_session(session.clone())
                .with_session_timeout(Duration::from_secs(2))
                .with_connection_timeout(Duration::from_secs(2))
                .connect(&hosts)
        })
        .await
        .expect("attach to the session");
        drop(killer); // the last handle: the session is closed
        let owner = session_id.0;
        let gone = crate::retry_until(Duration::from_secs(10), || async {
            for path in self.lock_nodes_of(&self.chroot).await? {
                if matches!(self.admin.check_stat(&path).await, Ok(Some(stat)) if stat.ephemeral_owner == owner) {
                    return Err(zookeeper_client::Error::Timeout);
                }
            }
            Ok(())
        })
        .await;
        gone.expect("the killed session's znodes to go");
        self.heal().await;
    }

    async fn drop_next_reply(&self) {
        // Swallow replies until the server has created a znode of this client's session, then
        // reset the connections: the create was applied, but the client never heard so.
        let owner = self.locks.backend().client().expect("an open client").session_id().0;
        let mut watcher = loop {
            // The chroot may not exist yet: make sure it does, then watch everything under it.
            let _ = self
                .admin
                .mkdir(
                    &self.chroot,
                    &zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all()),
                )
                .await;
            if let Ok(w) = self.admin.watch(&self.chroot, AddWatchMode::PersistentRecursive).await {
                break w;
            }
        };
        self.proxies.set_mode(ProxyMode::DropReplies);
        let (proxies, dropped, admin) = (self.proxies.clone(), self.dropped.clone(), self.admin.clone());
        tokio::spawn(async move {
            loop {
                let event = watcher.changed().await;
                if event.event_type != EventType::NodeCreated {
                    continue;
                }
                if let Ok(Some(stat)) = admin.check_stat(&event.path).await {
                    if stat.ephemeral_owner == owner {
                        // Counted first: the client may hear of the reset and finish before this task runs on.
                        dropped.fetch_add(1, Ordering::SeqCst);
                        proxies.reset_connections();
                        return;
                    }
                }
            }
        });
    }

    async fn dropped_replies(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Harness for ZkHarness {
    async fn client(&self) -> Arc<dyn DistributedLock> {
        self.connect_via(&self.hosts, self.session_timeout).await.expect("a ZooKeeper lock client")
    }

    async fn faulty_client(&self) -> (Arc<dyn DistributedLock>, Box<dyn Faults>) {
        let proxies = ProxySet::start(&self.hosts).await.expect("proxies in front of the servers");
        let through = proxies.endpoints();
        let locks = self.connect_via(&through, self.session_timeout).await.expect("a ZooKeeper client behind a proxy");
        let faults = ZkFaults {
            locks: locks.clone(),
            proxies: Arc::new(proxies),
            hosts: self.hosts.clone(),
            admin: self.admin.clone(),
            chroot: self.chroot.clone(),
            dropped: Arc::default(),
        };
        (locks, Box::new(faults))
    }

    async fn client_with_ttl(&self, ttl: Duration) -> Result<Arc<dyn DistributedLock>, LockError> {
        Ok(self.connect_via(&self.hosts, ttl).await?)
    }

    fn ttl(&self) -> Duration {
        self.session_timeout
    }

    async fn requests(&self) -> u64 {
        self.clients.lock().unwrap().iter().map(|c| c.backend().requests()).sum()
    }

    async fn delete_holder(&self, name: &str) {
        let dir = format!("{}/{name}", self.chroot);
        let (children, _) = self.admin.get_children(&dir).await.expect("list the lock directory");
        let holder = lock_znodes(children).into_iter().next().expect("a holder to delete");
        self.admin.delete(&format!("{dir}/{holder}"), None).await.expect("delete the holder's znode");
    }

    async fn leftovers(&self) -> Vec<String> {
        match self.lock_nodes().await {
            Ok(nodes) => nodes,
            Err(e) => vec![format!("cannot list the chroot: {e}")],
        }
    }
}
