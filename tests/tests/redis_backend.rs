//! The Redis backend on real `redis-server` processes, beyond the conformance suite: what it
//! guarantees across a server restart and a failover (Redis keeps the queues, so what Redis
//! loses, the locks lose; docs/redis.md explains each case and the configuration that avoids
//! it), and `rediss://` with a password.

use std::time::Duration;

use distlock_core::DistributedLock;
use distlock_redis::{RedisBackend, RedisLocks};
use distlock_tests::redis_server::Durability;
use distlock_tests::{RedisDeployment, TcpProxy};

const BOUND: Duration = Duration::from_secs(20);

/// The settings every client of these tests shares.
fn builder(endpoint: &str, prefix: &str) -> distlock_redis::RedisBuilder {
    RedisBackend::builder()
        .address(endpoint)
        .prefix(prefix)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(1))
}

async fn client(endpoint: &str, prefix: &str, ttl: Duration) -> RedisLocks {
    builder(endpoint, prefix).ttl(ttl).connect().await.expect("a Redis lock client")
}

fn prefix() -> String {
    format!("durability-{}", uuid::Uuid::new_v4().simple())
}

/// Without persistence a restart forgets everything: the name's token counter starts again
/// (a token is repeated) and the lock is granted to another client while its holder, cut off
/// during the restart, still counts as holding (its lease clock has not run out).
#[tokio::test]
async fn a_restart_without_persistence_repeats_a_token_and_grants_the_lock_twice() {
    let mut redis = RedisDeployment::start(false, Durability::None).await.expect("redis");
    let prefix = prefix();
    let proxy = TcpProxy::start(([127, 0, 0, 1], redis.primary.port).into()).await.expect("proxy");
    let holder = client(&proxy.endpoint(), &prefix, Duration::from_secs(10)).await;
    let held = holder.lock("orders/42").await.expect("lock");
    proxy.set_mode(distlock_tests::ProxyMode::BlackHole); // the holder hears nothing of the restart

    redis.restart_primary().await.expect("restart");
    let other = client(&redis.endpoint(), &prefix, Duration::from_secs(10)).await;
    let second = tokio::time::timeout(BOUND, other.lock("orders/42")).await.expect("in time").expect("lock");

    assert!(second.fencing_token() <= held.fencing_token(), "the counter started again: a token is repeated");
    assert!(held.is_held(), "the first holder still counts as holding: the lock is granted twice");
}

/// With `appendonly yes` and `appendfsync always`, every script's writes are on disk before its
/// reply: after a restart the holder still holds, nobody else gets in, and the next holder's
/// token is greater.
#[tokio::test]
async fn with_appendfsync_always_a_restart_keeps_the_lock_and_its_tokens() {
    let mut redis = RedisDeployment::start(false, Durability::AppendFsyncAlways).await.expect("redis");
    let prefix = prefix();
    let holder = client(&redis.endpoint(), &prefix, Duration::from_secs(5)).await;
    let held = holder.lock("orders/42").await.expect("lock");

    redis.restart_primary().await.expect("restart");
    let other = client(&redis.endpoint(), &prefix, Duration::from_secs(5)).await;
    assert!(other.try_lock("orders/42").await.expect("try_lock").is_none(), "still held after the restart");
    let waiting = tokio::spawn(async move { other.lock("orders/42").await.map(|g| g.fencing_token()) });
    assert!(held.is_held(), "the holder's session survived the restart");
    let first = held.fencing_token();
    held.release().await.expect("release after the restart");
    let next = tokio::time::timeout(BOUND, waiting).await.expect("in time").expect("task").expect("lock");
    assert!(next > first, "tokens keep growing across the restart: {next} after {first}");
}

/// Redis replicates asynchronously: a replica promoted before it received a grant knows
/// nothing of it, and grants the lock again, with a token already given.
#[tokio::test]
async fn a_failover_to_a_replica_that_missed_the_grant_grants_the_lock_twice() {
    let mut redis = RedisDeployment::start_with_replica_link(Durability::None).await.expect("redis");
    let prefix = prefix();
    let replica = redis.replica.as_ref().expect("replica").endpoint();
    let link = redis.replica_link.as_ref().expect("replica link");
    link.set_mode(distlock_tests::ProxyMode::BlackHole); // the replica falls behind from here

    let holder = client(&redis.endpoint(), &prefix, Duration::from_secs(10)).await;
    let held = holder.lock("orders/42").await.expect("lock");
    redis.primary.process.kill();
    redis.promote_replica().await.expect("promote the replica");

    let other = client(&replica, &prefix, Duration::from_secs(10)).await;
    let second = tokio::time::timeout(BOUND, other.lock("orders/42")).await.expect("in time").expect("lock");
    assert!(
        second.fencing_token() <= held.fencing_token(),
        "the replica's counter never saw the grant: a token is repeated"
    );
    assert!(held.is_held(), "the first holder still counts as holding: the lock is granted twice");
}

/// A client that waits for `replicas` replicas to acknowledge each grant, release and renewal.
/// Its `WAIT`s last up to half the request timeout: 1 s, ample for a replica behind a link that
/// delays each way by 100 ms.
async fn waiting_for_replicas(endpoint: &str, prefix: &str, replicas: u32) -> RedisLocks {
    let builder = builder(endpoint, prefix).replicas(replicas).request_timeout(Duration::from_secs(2));
    builder.connect().await.expect("a Redis lock client")
}

/// With `replicas=1` a failover to a replica that lags keeps the lock: `lock` returns only once
/// the replica has the grant, so the promoted replica still has the holder's entry and grants
/// no one else. (Without the setting `lock` returns while the grant is still in transit, and
/// the cut below loses it.)
#[tokio::test]
async fn with_replicas_1_a_failover_to_the_replica_keeps_the_lock() {
    let mut redis = RedisDeployment::start_with_replica_link(Durability::None).await.expect("redis");
    let prefix = prefix();
    let replica = redis.replica.as_ref().expect("replica").endpoint();
    let link = redis.replica_link.as_ref().expect("replica link");
    link.set_mode(distlock_tests::ProxyMode::Delay(Duration::from_millis(100)));
    let holder = waiting_for_replicas(&redis.endpoint(), &prefix, 1).await;
    let held = holder.lock("orders/42").await.expect("lock, acknowledged by the replica");
    // The link is cut the moment `lock` returns: what is still in transit is lost.
    link.set_mode(distlock_tests::ProxyMode::BlackHole);
    redis.primary.process.kill();
    redis.promote_replica().await.expect("promote the replica");

    let other = client(&replica, &prefix, Duration::from_secs(10)).await;
    let second = other.try_lock("orders/42").await.expect("try_lock on the promoted replica");
    assert!(second.is_none(), "the promoted replica still has the holder's grant: no second grant");
    let info = other.inspect("orders/42").await.expect("inspect");
    assert_eq!(info.holder.map(|h| h.token), Some(held.fencing_token()), "the holder's entry and token");
    assert!(held.is_held());
}

/// With `replicas=1` and the replica cut off, a grant the replica cannot acknowledge is refused
/// with an error that names the replicas, and its entry leaves the queue: the failover of the
/// test above then finds no holder, and grants the lock once.
#[tokio::test]
async fn with_replicas_1_a_grant_the_replica_cannot_acknowledge_is_refused() {
    let mut redis = RedisDeployment::start_with_replica_link(Durability::None).await.expect("redis");
    let prefix = prefix();
    let replica = redis.replica.as_ref().expect("replica").endpoint();
    redis.replica_link.as_ref().expect("replica link").set_mode(distlock_tests::ProxyMode::BlackHole);

    let holder = waiting_for_replicas(&redis.endpoint(), &prefix, 1).await;
    let refused = tokio::time::timeout(BOUND, holder.lock("orders/42")).await.expect("in time");
    let error = refused.expect_err("a grant the replica did not acknowledge");
    let why = std::error::Error::source(&error).map(|source| source.to_string()).unwrap_or_default();
    assert!(why.contains("0 of the 1 replicas") && why.contains("replicas=1"), "the error says why: {error}: {why}");
    assert!(error.is_retryable(), "{error}");
    let admin = client(&redis.endpoint(), &prefix, Duration::from_secs(10)).await;
    distlock_tests::retry_until(BOUND, || async {
        match admin.inspect("orders/42").await {
            Ok(info) if info.holder.is_none() && info.waiters.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("the refused grant's entry leaves the queue");

    redis.primary.process.kill();
    redis.promote_replica().await.expect("promote the replica");
    let other = client(&replica, &prefix, Duration::from_secs(10)).await;
    let granted = tokio::time::timeout(BOUND, other.lock("orders/42")).await.expect("in time").expect("lock");
    assert!(granted.is_held(), "one grant, on the promoted replica: the first client never held the lock");
}

/// `rediss://` with the server's CA and a password: locks over TLS; a wrong password is a
/// refusal that names the credentials; a CA the server's certificate does not chain to fails
/// the connect.
#[tokio::test]
async fn a_rediss_url_with_a_password_locks_over_tls() {
    let cert = distlock_tests::tls::TestCertificates::new().expect("test certificates");
    let redis = RedisDeployment::start_tls(&cert, "s3cret").await.expect("redis with TLS");
    let port = redis.primary.tls_port.expect("a TLS port");
    let ca = cert.ca_cert.display().to_string();
    let url = |password: &str| format!("rediss://:{password}@127.0.0.1:{port}?ca={ca}&prefix={}", prefix());

    let locks = distlock::connect(&url("s3cret")).await.expect("connect over TLS");
    let guard = locks.lock("orders/42").await.expect("lock over TLS");
    assert!(guard.fencing_token().get() > 0);
    guard.release().await.expect("release");
    locks.close().await.expect("close");

    match distlock::connect(&url("wrong")).await {
        Err(e @ distlock_core::LockError::Unauthorized { .. }) => assert!(e.to_string().contains("password"), "{e}"),
        Err(other) => panic!("a wrong password: expected Unauthorized, got {other}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }
    let untrusted = format!("rediss://:s3cret@127.0.0.1:{port}?prefix=x&connect_timeout=1s&request_timeout=1s");
    assert!(distlock::connect(&untrusted).await.is_err(), "a server certificate no trusted CA signed");
}
