//! The harness's ZooKeeper topologies start, serve a write and a read through
//! `zookeeper-client`, and survive member faults.

use std::time::Duration;

use distlock_tests::zk::connect;
use distlock_tests::{shared, ZkEnsemble};
use zookeeper_client::{Acls, CreateMode};

async fn create_get(hosts: &str, path: &str) {
    let client = connect(hosts, Duration::from_secs(4)).await.expect("connect");
    client.create(path, b"value", &CreateMode::Persistent.with_acls(Acls::anyone_all())).await.expect("create");
    let (data, stat) = client.get_data(path).await.expect("get");
    assert_eq!(data, b"value");
    assert!(stat.czxid > 0);
    client.delete(path, None).await.expect("delete");
}

#[tokio::test]
async fn shared_zookeeper_serves_write_and_read() {
    let target = shared::zookeeper().await;
    create_get(&target.endpoints.join(","), &format!("/smoke-{}", uuid::Uuid::new_v4())).await;
}

#[tokio::test]
async fn three_node_ensemble_serves_and_survives_leader_kill() {
    let mut ensemble = ZkEnsemble::start(3).await.expect("start");
    for endpoint in ensemble.endpoints() {
        create_get(&endpoint, "/smoke-each-member").await; // every member serves
    }
    let leader = ensemble.leader().await.expect("a leader");
    ensemble.members[leader].process.kill();
    let survivors: Vec<String> =
        ensemble.members.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, m)| m.endpoint()).collect();
    distlock_tests::retry_until(Duration::from_secs(30), || async {
        let client = connect(&survivors.join(","), Duration::from_secs(4)).await?;
        client.create("/smoke-after-kill", b"", &CreateMode::Ephemeral.with_acls(Acls::anyone_all())).await.map(drop)
    })
    .await
    .expect("the two survivors elect a leader and take writes");
    assert_ne!(ensemble.leader().await, Some(leader));
    ensemble.members[leader].process.restart().expect("restart");
    ensemble.wait_ready().await.expect("ready after restart");
    create_get(&ensemble.members[leader].endpoint(), "/smoke-restarted").await;
}

#[tokio::test]
async fn four_letter_words_answer() {
    let target = shared::zookeeper().await;
    let answer = distlock_tests::zk::four_letter(&target.endpoints[0], "ruok").await.expect("ruok");
    assert_eq!(answer, "imok");
    let mntr = distlock_tests::zk::four_letter(&target.endpoints[0], "mntr").await.expect("mntr");
    assert!(mntr.contains("zk_packets_received"), "{mntr}");
}
