//! The conformance suite, unchanged, on a real 3-node ZooKeeper ensemble.

distlock_core::conformance_tests!(async {
    distlock_tests::ZkHarness::new(distlock_tests::shared::zookeeper_ensemble().await.endpoints.clone()).await
});
