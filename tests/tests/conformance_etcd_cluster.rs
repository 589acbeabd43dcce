//! The conformance suite, unchanged, on a real 3-node etcd cluster.

distlock_core::conformance_tests!(async {
    distlock_tests::EtcdHarness::new(distlock_tests::shared::etcd_cluster().await.endpoints.clone()).await
});
