//! Semantic 10 and the non-waiting calls: bad input gets a clear error and changes nothing;
//! `try_lock` and `lock_timeout` do not wait beyond what they promise.

use std::time::Duration;

use tokio::time::Instant;

use super::{unique_name, wait_for_queue, Harness, PROMPTLY};
use crate::{LockError, MAX_NAME_LEN};

/// `try_lock` returns `None` at once when another client holds or waits; `lock_timeout` gives
/// up after its timeout and leaves nothing queued.
pub async fn try_lock_and_timeout_do_not_wait(h: &dyn Harness) {
    let name = unique_name("try");
    let a = h.client().await;
    let b = h.client().await;
    let g = a.try_lock(&name).await.expect("try_lock").expect("a free lock is taken");
    let started = Instant::now();
    assert!(b.try_lock(&name).await.expect("try_lock").is_none());
    assert!(b.lock_timeout(&name, Duration::from_millis(300)).await.expect("lock_timeout").is_none());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "waited {waited:?}");
    wait_for_queue(a.as_ref(), &name, PROMPTLY, "no waiter left", |i| i.waiters.is_empty()).await;
    g.release().await.expect("release");
    let g = b.lock_timeout(&name, PROMPTLY).await.expect("lock_timeout").expect("a free lock is granted");
    g.release().await.expect("release");
}

/// Semantic 10a: Empty names, NUL bytes, `..`, a trailing `/`, over-long names: every call refuses them
/// with `InvalidName`, sends nothing, and leaves nothing on the server.
pub async fn bad_names_are_refused_and_change_nothing(h: &dyn Harness) {
    let client = h.client().await;
    let too_long = "x".repeat(MAX_NAME_LEN + 1);
    let bad = ["", "a\0b", "..", "a/../b", "a/", "/a", "a//b", too_long.as_str()];
    let before = h.requests().await;
    for name in bad {
        let is_invalid = |r: &Result<(), LockError>| matches!(r, Err(LockError::InvalidName { .. }));
        assert!(is_invalid(&client.lock(name).await.map(drop)), "lock({name:?})");
        assert!(is_invalid(&client.try_lock(name).await.map(drop)), "try_lock({name:?})");
        assert!(
            is_invalid(&client.lock_timeout(name, Duration::from_secs(1)).await.map(drop)),
            "lock_timeout({name:?})"
        );
        assert!(is_invalid(&client.inspect(name).await.map(drop)), "inspect({name:?})");
    }
    assert_eq!(h.requests().await, before, "invalid names must not reach the server");
    assert_eq!(h.leftovers().await, Vec::<String>::new());
    // The client still works.
    let g = client.lock(&unique_name("after-bad-names")).await.expect("lock");
    g.release().await.expect("release");
}

/// Semantic 10b: A zero TTL is refused with `InvalidConfig` that names the setting.
pub async fn bad_ttls_are_refused(h: &dyn Harness) {
    match h.client_with_ttl(Duration::ZERO).await {
        Err(e @ LockError::InvalidConfig { .. }) => {
            assert!(e.to_string().contains("ttl") || e.to_string().contains("timeout"), "{e}")
        }
        Err(other) => panic!("expected InvalidConfig for a zero TTL, got {other}"),
        Ok(_) => panic!("a zero TTL was accepted"),
    }
    assert_eq!(h.leftovers().await, Vec::<String>::new());
}
