//! The partition the fault suite injects is real: a leader cut off from its peers stops
//! serving, the majority elects another and serves, and after healing all serve again.

use std::time::Duration;

use distlock_core::conformance::wait_for;
use distlock_tests::{etcd, EtcdCluster, ZkEnsemble};

const BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_partitioned_from_its_peers_is_replaced_and_rejoins() {
    let cluster = EtcdCluster::start_partitionable(3).await.expect("a 3-member etcd cluster");
    let old = cluster.leader().await.expect("a leader");
    cluster.isolate(old).expect("isolate the leader");
    let others: Vec<String> =
        cluster.members.iter().enumerate().filter(|(i, _)| *i != old).map(|(_, m)| m.endpoint()).collect();
    let new = wait_for("a new leader among the majority", BOUND, || async {
        match cluster.leader().await {
            Some(l) if l != old => Ok(l),
            other => Err(other),
        }
    })
    .await
    .expect("the majority elects a leader");
    let mut majority = etcd::connect(&others).await.expect("a client of the majority");
    majority.put("partition/majority", "1", None).await.expect("the majority serves writes");
    let mut minority = etcd::connect(&[cluster.members[old].endpoint()]).await.expect("a client of the isolated one");
    assert!(minority.put("partition/minority", "1", None).await.is_err(), "the isolated member must not serve writes");
    cluster.heal();
    wait_for("the isolated member to serve again", BOUND, || async {
        minority.clone().get("partition/majority", None).await.map(|r| r.kvs().len())
    })
    .await
    .expect("healed");
    assert_ne!(new, old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_leader_partitioned_from_its_peers_is_replaced_and_rejoins() {
    let ensemble = ZkEnsemble::start_partitionable(3).await.expect("a 3-server ensemble");
    let old = ensemble.leader().await.expect("a leader");
    ensemble.isolate(old).expect("isolate the leader");
    wait_for("a new leader among the majority, the old one not serving", BOUND, || async {
        let new = ensemble.leader().await;
        let old_mode = ensemble.members[old].mode().await.ok();
        match (new, old_mode.as_deref()) {
            (Some(l), None | Some("looking")) if l != old => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| {
        let logs: Vec<String> = ensemble.members.iter().map(|m| m.process.log_tail(20)).collect();
        panic!("the majority elects no leader or the isolated one still serves: {e}\n{}", logs.join("\n---\n"))
    });
    ensemble.heal();
    ensemble.wait_ready().await.expect("every server serves again");
    assert_eq!(ensemble.members[old].mode().await.expect("a mode"), "follower", "it rejoins as a follower");
}
