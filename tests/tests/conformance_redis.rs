//! The conformance suite, unchanged, on a single real Redis server.

distlock_core::conformance_tests!(async {
    distlock_tests::RedisHarness::new(distlock_tests::shared::redis().await.endpoints[0].clone()).await
});
