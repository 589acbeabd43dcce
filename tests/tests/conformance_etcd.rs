//! The conformance suite, unchanged, on a single real etcd node.

distlock_core::conformance_tests!(async {
    distlock_tests::EtcdHarness::new(distlock_tests::shared::etcd().await.endpoints.clone()).await
});
