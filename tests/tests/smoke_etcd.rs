//! The harness's etcd topologies start, serve a write and a read through `etcd-client`, and
//! survive member faults; the proxy cuts, black-holes and delays etcd traffic.

use std::time::Duration;

use distlock_tests::etcd::connect;
use distlock_tests::{shared, EtcdCluster, ProxyMode, TcpProxy};
use tokio::time::Instant;

async fn put_get(endpoints: &[String], key: &str) {
    let mut client = connect(endpoints).await.expect("connect");
    client.put(key, "value", None).await.expect("put");
    let got = client.get(key, None).await.expect("get");
    assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"value"[..]));
    client.delete(key, None).await.expect("delete");
}

#[tokio::test]
async fn shared_etcd_serves_write_and_read() {
    let target = shared::etcd().await;
    put_get(&target.endpoints, &format!("smoke/{}", uuid::Uuid::new_v4())).await;
}

#[tokio::test]
async fn three_node_etcd_serves_and_survives_member_faults() {
    let mut cluster = EtcdCluster::start(3).await.expect("start");
    for endpoint in cluster.endpoints() {
        put_get(&[endpoint], "smoke/each-member").await; // every member answers
    }
    let leader = cluster.leader().await.expect("a leader");
    cluster.members[leader].process.kill();
    cluster.wait_writable().await.expect("writable after the leader was killed");
    let new_leader = cluster.leader().await.expect("a new leader");
    assert_ne!(new_leader, leader);
    cluster.members[leader].process.restart().expect("restart");
    cluster.wait_ready().await.expect("ready after restart");
    put_get(&[cluster.members[leader].endpoint()], "smoke/restarted").await;

    let leader_now = cluster.leader().await;
    let follower = (0..3).find(|i| Some(*i) != leader_now).expect("a follower");
    cluster.members[follower].process.pause();
    cluster.wait_writable().await.expect("writable with a member paused");
    cluster.members[follower].process.resume();
    cluster.wait_ready().await.expect("ready after resume");
}

#[tokio::test]
async fn single_node_etcd_restarts_with_its_data() {
    let mut cluster = EtcdCluster::start(1).await.expect("start");
    let mut client = cluster.client().await.expect("client");
    client.put("smoke/durable", "kept", None).await.expect("put");
    cluster.members[0].process.restart().expect("restart");
    cluster.wait_ready().await.expect("ready after restart");
    let mut client = cluster.client().await.expect("client");
    let got = client.get("smoke/durable", None).await.expect("get");
    assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"kept"[..]));
}

#[tokio::test]
async fn proxy_passes_cuts_blackholes_and_delays() {
    let target = shared::etcd().await;
    let proxy = TcpProxy::start(target.endpoints[0].parse().expect("addr")).await.expect("proxy");
    let through = vec![proxy.endpoint()];
    put_get(&through, "smoke/proxy").await;

    let mut client = connect(&through).await.expect("connect");
    client.put("smoke/proxy", "1", None).await.expect("put through the proxy");
    assert!(!proxy.connections().is_empty());

    proxy.set_mode(ProxyMode::BlackHole);
    let started = Instant::now();
    let result = client.get("smoke/proxy", None).await;
    assert!(result.is_err(), "a black-holed request must time out");
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited for the timeout, {:?}", started.elapsed());

    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let mut delayed = connect(&through).await.expect("connect through a slow proxy");
    delayed.get("smoke/proxy", None).await.expect("a delayed get");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());

    proxy.cut();
    assert!(proxy.connections().is_empty());
    assert!(client.get("smoke/proxy", None).await.is_err(), "a cut connection serves nothing");
    let fresh = async { connect(&through).await?.get("smoke/proxy", None).await };
    assert!(fresh.await.is_err(), "a cut proxy refuses new connections");

    proxy.heal();
    let mut healed = connect(&through).await.expect("connect after heal");
    healed.get("smoke/proxy", None).await.expect("get after heal");
    healed.delete("smoke/proxy", None).await.expect("cleanup");
}
