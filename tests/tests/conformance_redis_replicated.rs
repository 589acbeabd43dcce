//! The conformance suite, unchanged, on a real Redis primary with a replica.

distlock_core::conformance_tests!(async {
    distlock_tests::RedisHarness::new(distlock_tests::shared::redis_replicated().await.endpoints[0].clone()).await
});
