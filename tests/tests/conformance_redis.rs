//! The conformance suite, unchanged, on real Redis: a single server (`single::`) and a primary
//! with a replica (`replicated::`). One binary for both: a test binary's link is the costly part.

mod single {
    distlock_core::conformance_tests!(async {
        distlock_tests::RedisHarness::new(distlock_tests::shared::redis().await.endpoints[0].clone()).await
    });
}

mod replicated {
    distlock_core::conformance_tests!(async {
        distlock_tests::RedisHarness::new(distlock_tests::shared::redis_replicated().await.endpoints[0].clone()).await
    });
}
