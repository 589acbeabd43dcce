//! The harness stops every server it started: on drop, and when the test that owns it panics.
//! And `DISTLOCK_TEST_ETCD` / `DISTLOCK_TEST_ZK` values are read as endpoint lists.

use distlock_tests::shared::endpoints_from;
use distlock_tests::{EtcdCluster, ZkEnsemble};

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn dropping_a_cluster_stops_its_processes() {
    let cluster = EtcdCluster::start(1).await.expect("etcd");
    let ensemble = ZkEnsemble::start(1).await.expect("zookeeper");
    let pids: Vec<u32> = cluster
        .members
        .iter()
        .filter_map(|m| m.process.pid())
        .chain(ensemble.members.iter().filter_map(|m| m.process.pid()))
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| alive(*p)));
    drop(cluster);
    drop(ensemble);
    assert!(pids.iter().all(|p| !alive(*p)), "processes left running: {pids:?}");
}

#[tokio::test]
async fn a_panicking_test_still_stops_its_servers() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let cluster = EtcdCluster::start(1).await.expect("etcd");
        let _ = tx.send(cluster.members[0].process.pid().expect("pid"));
        panic!("a failing test");
    });
    let pid = rx.await.expect("the server started");
    assert!(test.await.unwrap_err().is_panic());
    assert!(!alive(pid), "etcd {pid} outlived the panicking test");
}

#[test]
fn env_values_are_endpoint_lists() {
    assert_eq!(endpoints_from(None), None);
    assert_eq!(endpoints_from(Some("")), None);
    assert_eq!(endpoints_from(Some("  ")), None);
    assert_eq!(endpoints_from(Some("h1:2379")), Some(vec!["h1:2379".to_owned()]));
    assert_eq!(endpoints_from(Some("h1:1, h2:2,")), Some(vec!["h1:1".to_owned(), "h2:2".to_owned()]));
}
