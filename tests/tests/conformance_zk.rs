//! The conformance suite, unchanged, on a single real ZooKeeper server.

distlock_core::conformance_tests!(async {
    distlock_tests::ZkHarness::new(distlock_tests::shared::zookeeper().await.endpoints.clone()).await
});
