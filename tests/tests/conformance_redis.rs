//! The conformance suite, unchanged, on real Redis: a single server (`single::`), a primary with
//! a replica (`replicated::`), and the same with clients that wait for the replica to
//! acknowledge every grant, release and renewal (`replicas=1`, `acknowledged::`). One binary for
//! all: a test binary's link is the costly part.

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

mod acknowledged {
    distlock_core::conformance_tests!(async {
        let primary = distlock_tests::shared::redis_replicated().await.endpoints[0].clone();
        distlock_tests::RedisHarness::waiting_for_replicas(primary, 1).await
    });
}

/// The servers the suite ran on are a Redis the backend supports (6.2 or later), and the one the
/// test command asked for: it runs this binary a second time with `DISTLOCK_REDIS_SERVER`
/// naming a Redis 6.2 build and `DISTLOCK_REDIS_VERSION=6.2.`.
mod server {
    async fn version(endpoint: &str) -> String {
        let client = redis::Client::open(format!("redis://{endpoint}")).expect("a Redis URL");
        let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut connection).await.expect("INFO server");
        let line = info.lines().find_map(|line| line.strip_prefix("redis_version:"));
        line.expect("INFO server names the version").trim().to_owned()
    }

    #[tokio::test]
    async fn the_suite_runs_on_a_supported_redis_and_the_one_asked_for() {
        let single = distlock_tests::shared::redis().await.endpoints[0].clone();
        let replicated = distlock_tests::shared::redis_replicated().await.endpoints[0].clone();
        for endpoint in [single, replicated] {
            let version = version(&endpoint).await;
            let numbers: Vec<u32> = version.split('.').map_while(|n| n.parse().ok()).collect();
            assert!(numbers.len() >= 2 && (numbers[0], numbers[1]) >= (6, 2), "{endpoint} runs Redis {version}");
            if let Ok(asked) = std::env::var("DISTLOCK_REDIS_VERSION") {
                assert!(version.starts_with(&asked), "{endpoint} runs Redis {version}, not the {asked} asked for");
            }
        }
    }
}
