//! Servers shared by every test of one test binary, started on first use: a single etcd node and
//! a standalone ZooKeeper. Tests keep apart by a unique prefix or chroot each.
//!
//! `DISTLOCK_TEST_ETCD=h1:2379,h2:2379` and `DISTLOCK_TEST_ZK=h1:2181,h2:2181` point the tests at
//! servers already running (for example the repository's docker-compose cluster) instead.
//! Tests that kill, pause or restart servers always start their own.

use tokio::sync::OnceCell;

use crate::{EtcdCluster, ZkEnsemble};

/// Where shared tests find a server: endpoints, and the cluster if the harness started it.
#[derive(Debug)]
pub struct Target<S> {
    /// `host:port` of each server.
    pub endpoints: Vec<String>,
    /// The servers the harness started, kept alive for the whole test binary.
    pub started: Option<S>,
}

/// The endpoints named by an environment variable's value (`h1:p1,h2:p2`), if it is set and
/// non-empty.
pub fn endpoints_from(value: Option<&str>) -> Option<Vec<String>> {
    let value = value?.trim();
    if value.is_empty() {
        return None;
    }
    Some(value.split(',').map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect())
}

/// The shared etcd: `DISTLOCK_TEST_ETCD`, else a single node started once for this binary.
pub async fn etcd() -> &'static Target<EtcdCluster> {
    static ETCD: OnceCell<Target<EtcdCluster>> = OnceCell::const_new();
    ETCD.get_or_init(|| async {
        if let Some(endpoints) = endpoints_from(std::env::var("DISTLOCK_TEST_ETCD").ok().as_deref()) {
            return Target { endpoints, started: None };
        }
        let cluster = EtcdCluster::start(1).await.expect("starting the shared etcd");
        Target { endpoints: cluster.endpoints(), started: Some(cluster) }
    })
    .await
}

/// The shared ZooKeeper: `DISTLOCK_TEST_ZK`, else a standalone server started once for this binary.
pub async fn zookeeper() -> &'static Target<ZkEnsemble> {
    static ZK: OnceCell<Target<ZkEnsemble>> = OnceCell::const_new();
    ZK.get_or_init(|| async {
        if let Some(endpoints) = endpoints_from(std::env::var("DISTLOCK_TEST_ZK").ok().as_deref()) {
            return Target { endpoints, started: None };
        }
        let ensemble = ZkEnsemble::start(1).await.expect("starting the shared ZooKeeper");
        Target { endpoints: ensemble.endpoints(), started: Some(ensemble) }
    })
    .await
}

/// A shared 3-node etcd cluster for this binary (`DISTLOCK_TEST_ETCD_CLUSTER` names one running).
pub async fn etcd_cluster() -> &'static Target<EtcdCluster> {
    static CLUSTER: OnceCell<Target<EtcdCluster>> = OnceCell::const_new();
    CLUSTER
        .get_or_init(|| async {
            if let Some(endpoints) = endpoints_from(std::env::var("DISTLOCK_TEST_ETCD_CLUSTER").ok().as_deref()) {
                return Target { endpoints, started: None };
            }
            let cluster = EtcdCluster::start(3).await.expect("starting the shared 3-node etcd");
            Target { endpoints: cluster.endpoints(), started: Some(cluster) }
        })
        .await
}

/// A shared 3-node ZooKeeper ensemble for this binary (`DISTLOCK_TEST_ZK_CLUSTER` names one running).
pub async fn zookeeper_ensemble() -> &'static Target<ZkEnsemble> {
    static ENSEMBLE: OnceCell<Target<ZkEnsemble>> = OnceCell::const_new();
    ENSEMBLE
        .get_or_init(|| async {
            if let Some(endpoints) = endpoints_from(std::env::var("DISTLOCK_TEST_ZK_CLUSTER").ok().as_deref()) {
                return Target { endpoints, started: None };
            }
            let ensemble = ZkEnsemble::start(3).await.expect("starting the shared 3-node ZooKeeper");
            Target { endpoints: ensemble.endpoints(), started: Some(ensemble) }
        })
        .await
}

/// The shared Redis primary: `DISTLOCK_TEST_REDIS` (`host:port`), else a `redis-server`
/// started once for this binary.
pub async fn redis() -> &'static Target<crate::RedisDeployment> {
    static REDIS: OnceCell<Target<crate::RedisDeployment>> = OnceCell::const_new();
    REDIS
        .get_or_init(|| async {
            if let Some(endpoints) = endpoints_from(std::env::var("DISTLOCK_TEST_REDIS").ok().as_deref()) {
                return Target { endpoints, started: None };
            }
            let deployment = crate::RedisDeployment::start(false, crate::redis_server::Durability::None)
                .await
                .expect("starting the shared Redis");
            Target { endpoints: vec![deployment.endpoint()], started: Some(deployment) }
        })
        .await
}

/// A shared Redis primary with a replica (`DISTLOCK_TEST_REDIS_REPLICATED` names the primary
/// of one running): clients talk to the primary, which replicates every script to the replica.
pub async fn redis_replicated() -> &'static Target<crate::RedisDeployment> {
    static REDIS: OnceCell<Target<crate::RedisDeployment>> = OnceCell::const_new();
    REDIS
        .get_or_init(|| async {
            if let Some(endpoints) = endpoints_from(std::env::var("DISTLOCK_TEST_REDIS_REPLICATED").ok().as_deref()) {
                return Target { endpoints, started: None };
            }
            let deployment = crate::RedisDeployment::start(true, crate::redis_server::Durability::None)
                .await
                .expect("starting the shared Redis primary and replica");
            Target { endpoints: vec![deployment.endpoint()], started: Some(deployment) }
        })
        .await
}
