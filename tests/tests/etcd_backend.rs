//! etcd-specific behaviour on real servers: URL connection, interop with `etcdctl lock` (Go's
//! `concurrency.Mutex`), holder process death, restarts and leader loss, fencing, long queues.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use distlock::DistributedLock;
use distlock_core::conformance::{wait_for, wait_for_queue, Harness};
use distlock_etcd::etcd_client::{DeleteOptions, GetOptions, Txn, TxnOp};
use distlock_tests::{peer_process, scenarios, shared, EtcdCluster, EtcdHarness};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::{timeout, Instant};

const BOUND: Duration = Duration::from_secs(20);

async fn harness() -> EtcdHarness {
    EtcdHarness::new(shared::etcd().await.endpoints.clone()).await
}

#[tokio::test]
async fn connect_by_url_and_refuse_unreachable_endpoints_quickly() {
    let h = harness().await;
    let url = format!("etcd://{}/{}?ttl=2s", shared::etcd().await.endpoints.join(","), h.prefix());
    let locks = distlock::connect(&url).await.expect("connect by URL");
    let guard = locks.lock("by-url").await.expect("lock");
    assert!(h.leftovers().await.iter().any(|k| k.contains("by-url/")), "the key lives under the URL's prefix");
    guard.release().await.expect("release");

    let started = Instant::now();
    let dead = format!("etcd://127.0.0.1:{}?ttl=2s", distlock_tests::ports::free_port());
    let err = distlock::connect(&dead).await.err().expect("nothing listens there");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("cannot reach"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(12), "bounded by the connect timeout: {:?}", started.elapsed());
}

/// Members that are down, listed beside a live one (members stopped for an upgrade):
/// connecting, locking, the election's reads and inspecting all work, each request that the
/// client's balancer sends to the dead endpoint tried again on the live one, and the session
/// stays connected.
#[tokio::test]
async fn endpoints_that_are_down_beside_a_live_one_fail_no_call() {
    let h = harness().await;
    let live = shared::etcd().await.endpoints.join(",");
    // Two dead members: one refuses connections; one accepts them and closes them at once, as a
    // proxy or load balancer in front of a stopped member does (the client keeps trying it).
    let refusing = format!("127.0.0.1:{}", distlock_tests::ports::free_port());
    let nothing_behind = format!("127.0.0.1:{}", distlock_tests::ports::free_port()).parse().expect("an address");
    let closing = distlock_tests::TcpProxy::start(nothing_behind).await.expect("a proxy to nowhere");
    let url = format!("etcd://{refusing},{},{live}/{}?ttl=2s", closing.endpoint(), h.prefix());
    let locks =
        timeout(BOUND, distlock::connect(&url)).await.expect("bounded").expect("connect with one endpoint down");
    for _ in 0..20 {
        locks.lock("one-down").await.expect("lock").release().await.expect("release");
        assert_eq!(
            locks.session_state(),
            distlock_core::SessionState::Connected,
            "one member down is not out of touch"
        );
    }
    let leadership = locks.campaign("one-down-election", "me").await.expect("campaign");
    let leader = locks.leader("one-down-election").await.expect("read the leader").expect("a leader");
    assert_eq!((leader.value.as_str(), leader.term), ("me", leadership.term()));
    leadership.resign().await.expect("resign");
    assert!(locks.inspect("one-down").await.expect("inspect").holder.is_none(), "released");
}

/// Starts `etcdctl lock NAME` and returns it once it printed that it holds the lock.
async fn etcdctl_lock(endpoints: &[String], name: &str) -> tokio::process::Child {
    let mut child = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["lock", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("etcdctl (Debian etcd-client)");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    timeout(BOUND, lines.next_line()).await.expect("etcdctl prints its key once it holds the lock").expect("read");
    child
}

#[tokio::test]
async fn etcdctl_lock_and_distlock_exclude_each_other() {
    let h = harness().await;
    let endpoints = shared::etcd().await.endpoints.clone();
    let name = "interop";
    let ours = h.client().await;

    // Go holds, distlock waits.
    let mut go_holder = etcdctl_lock(&endpoints, &format!("{}/{name}", h.prefix())).await;
    assert!(ours.try_lock(name).await.expect("try_lock").is_none(), "distlock must see etcdctl's hold");
    let waiter = ours.clone();
    let waiting = tokio::spawn(async move { waiter.lock(name).await.expect("lock") });
    wait_for_queue(ours.as_ref(), name, BOUND, "distlock to queue behind etcdctl", |i| i.waiters.len() == 1).await;
    assert!(!waiting.is_finished());
    go_holder.kill().await.expect("stop etcdctl"); // its session's lease is revoked or expires
    let guard = timeout(BOUND, waiting).await.expect("distlock acquires after etcdctl").expect("task");

    // distlock holds, Go waits.
    let go_prefix = format!("{}/{name}", h.prefix());
    let go_endpoints = endpoints.clone();
    let go_waiting = tokio::spawn(async move { etcdctl_lock(&go_endpoints, &go_prefix).await });
    wait_for_queue(ours.as_ref(), name, BOUND, "etcdctl to queue behind distlock", |i| i.waiters.len() == 1).await;
    assert!(!go_waiting.is_finished(), "etcdctl must wait while distlock holds");
    guard.release().await.expect("release");
    let mut go_holder = timeout(BOUND, go_waiting).await.expect("etcdctl acquires after distlock").expect("task");
    go_holder.kill().await.expect("stop etcdctl");
}

#[tokio::test]
async fn fence_makes_a_write_conditional_on_holding() {
    let h = harness().await;
    let locks = h.builder(&shared::etcd().await.endpoints).connect().await.expect("connect");
    let key = format!("{}-data/state", h.prefix());
    let guard = locks.lock("fenced").await.expect("lock");
    let write = |value: &'static str, fence| Txn::new().when([fence]).and_then([TxnOp::put(key.clone(), value, None)]);
    let mut client = locks.backend().client();
    assert!(client.txn(write("first", locks.backend().fence(&guard))).await.expect("txn").succeeded());
    let stale_fence = locks.backend().fence(&guard);
    guard.release().await.expect("release");
    let other = h.client().await;
    let newer = other.lock("fenced").await.expect("lock");
    assert!(
        !client.txn(write("stale", stale_fence)).await.expect("txn").succeeded(),
        "a stale holder's write is refused"
    );
    newer.release().await.expect("release");
    client.delete(key, None).await.expect("cleanup");
}

/// A holder whose key was first from its creation releases with a plain delete alone (two
/// requests a lock, no release marker): every waiter behind it read it as the owner, and such
/// a waiter is first on the key's deletion. A holder that waited writes its marker, for a
/// waiter that read it as a waiter, and that waiter is served on it.
#[tokio::test]
async fn only_a_holder_that_waited_writes_a_release_marker() {
    let h = harness().await;
    let endpoints = &shared::etcd().await.endpoints;
    let a = h.builder(endpoints).connect().await.expect("connect");
    let (b, c, observer) = (h.client().await, h.client().await, h.client().await);
    let mut admin = distlock_tests::etcd::connect(endpoints).await.expect("an admin client");
    let markers_prefix = distlock_etcd::EtcdBackend::builder().prefix(h.prefix()).config().expect("config");
    let markers_prefix = markers_prefix.release_marker_prefix();
    let markers = || {
        let (mut admin, prefix) = (admin.clone(), markers_prefix.clone());
        async move {
            let read = admin.get(prefix, Some(GetOptions::new().with_prefix().with_keys_only())).await;
            let read = read.expect("read the markers");
            read.kvs().iter().map(|kv| kv.key_str().unwrap_or("?").to_owned()).collect::<Vec<_>>()
        }
    };
    let queued = |n: usize| {
        wait_for_queue(observer.as_ref(), "marked", BOUND, "the waiters to queue", move |i| i.waiters.len() == n)
    };

    let before = a.backend().requests();
    a.lock("marked").await.expect("a locks, alone").release().await.expect("a releases");
    assert_eq!(a.backend().requests() - before, 2, "a Txn to take the lock, a delete to release it");
    assert_eq!(markers().await, Vec::<String>::new(), "a was first from its creation: no marker");

    let held = a.lock("marked").await.expect("a locks, alone");
    let b_waits = tokio::spawn({
        let b = b.clone();
        async move { b.lock("marked").await }
    });
    queued(1).await;
    let c_waits = tokio::spawn({
        let c = c.clone();
        async move { c.lock("marked").await }
    });
    queued(2).await;
    held.release().await.expect("a releases");
    let b_holds = timeout(BOUND, b_waits).await.expect("b is served").expect("b's task").expect("b's lock");
    assert_eq!(markers().await, Vec::<String>::new(), "a was first from its creation: no marker");

    b_holds.release().await.expect("b releases");
    let c_holds = timeout(BOUND, c_waits).await.expect("c is served").expect("c's task").expect("c's lock");
    let written = markers().await;
    assert_eq!(written.len(), 1, "b waited, so its release wrote its marker: {written:?}");
    assert!(written[0].contains("/marked//"), "the marker names the lock: {written:?}");
    c_holds.release().await.expect("c releases");
    admin.delete(markers_prefix.as_str(), Some(DeleteOptions::new().with_prefix())).await.expect("cleanup");
}

/// An uncontended lock costs etcd one Txn to take (it creates our key only if the lock's range
/// is empty) and one to release. After meeting another holder, the session queues with the Txn
/// that reads the queue, until it has found itself alone there often enough in a row.
#[tokio::test]
async fn an_uncontended_lock_costs_one_request_to_take_and_one_to_release() {
    let h = harness().await;
    let endpoints = &shared::etcd().await.endpoints;
    let (ours, other) = (h.builder(endpoints).connect().await.expect("connect"), h.client().await);
    let cheap = || scenarios::take_and_release(&ours, || ours.backend().requests(), "cheap");
    // Requests of one try_lock while `other` holds "cheap".
    let try_while_held = || async {
        let held = other.lock("cheap").await.expect("the other session holds");
        let before = ours.backend().requests();
        assert!(ours.try_lock("cheap").await.expect("try_lock").is_none());
        let sent = ours.backend().requests() - before;
        held.release().await.expect("release");
        sent
    };
    assert_eq!(cheap().await, (1, 1), "take and release, alone");
    assert_eq!(cheap().await, (1, 1), "again");
    assert_eq!(try_while_held().await, 3, "the empty-range Txn, the reading one, then leaving the queue");

    assert_eq!(cheap().await, (1, 1), "met others lately: the reading Txn, alone");
    assert_eq!(try_while_held().await, 2, "alone once is not enough: the reading Txn right away, then leaving");
    for _ in 0..distlock_core::backend::RecentContention::ALONE_TO_FORGET {
        assert_eq!(cheap().await, (1, 1), "the reading Txn, alone");
    }
    assert_eq!(try_while_held().await, 3, "alone often enough in a row: the empty-range Txn first again");

    for _ in 0..distlock_core::backend::RecentContention::ALONE_TO_FORGET {
        assert_eq!(cheap().await, (1, 1), "the reading Txn, alone");
    }
    let nested = other.lock("cheap/nightly").await.expect("a lock named below this one");
    assert_eq!(cheap().await, (2, 1), "its key is in the range: the reading Txn follows");
    assert_eq!(cheap().await, (1, 1), "and goes first while the range is shared");
    nested.release().await.expect("release");
}

/// A holder with no marker to write releases with a plain delete. If its reply is lost, the
/// delete may still be applied later; the session then queues for that lock under a new key, so
/// the lost delete, applied after the next hold began, removes nothing of it.
#[tokio::test]
async fn a_lost_release_reply_moves_the_lock_to_a_new_key_that_the_late_delete_cannot_remove() {
    let h = harness().await;
    let endpoints = &shared::etcd().await.endpoints;
    let proxies = distlock_tests::ProxySet::start(endpoints).await.expect("proxies");
    let locks = h
        .builder(&proxies.endpoints())
        .request_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect("connect through the proxies");
    let mut admin = distlock_tests::etcd::connect(endpoints).await.expect("an admin client");
    let name = distlock_core::LockName::new("lost-release").expect("name");
    let reader = admin.clone();
    let exists = |key: String| {
        let mut admin = reader.clone();
        async move { !admin.get(key, None).await.expect("read").kvs().is_empty() }
    };

    let first = locks.lock("lost-release").await.expect("lock");
    let old_key = locks.backend().lock_key(&name);
    assert!(old_key.ends_with(&format!("/{:x}", locks.backend().lease_id())), "Go's key: {old_key}");
    // The server applies the release's delete; the client hears nothing until its connections
    // are reset, then retries.
    proxies.set_mode(distlock_tests::ProxyMode::DropReplies);
    let release = tokio::spawn(first.release());
    wait_for("the server to apply the release", BOUND, || {
        let exists = exists(old_key.clone());
        async move {
            if exists.await {
                Err(())
            } else {
                Ok(())
            }
        }
    })
    .await
    .expect("the delete applied");
    proxies.reset_connections();
    // Confirmed by the fenced retry, or reported unconfirmed: either way the lock moved.
    let _ = timeout(BOUND, release).await.expect("the release ends").expect("its task");

    let new_key = locks.backend().lock_key(&name);
    assert_eq!(new_key, format!("{old_key}_1"), "the next key is of the next generation");
    let second = locks.lock("lost-release").await.expect("lock again");
    assert!(exists(new_key.clone()).await, "the new hold's key");
    // The lost delete, applied late.
    admin.delete(old_key.as_str(), None).await.expect("a late delete of the old key");
    let mut client = locks.backend().client();
    let data = format!("{}-data/lost-release", h.prefix());
    let write = Txn::new().when([locks.backend().fence(&second)]).and_then([TxnOp::put(data.as_str(), "x", None)]);
    assert!(client.txn(write).await.expect("txn").succeeded(), "the new hold still fences");
    assert!(exists(new_key.clone()).await && second.is_held(), "the late delete left the new hold alone");
    second.release().await.expect("release");
    assert!(!exists(new_key).await, "released");
    admin.delete(data, None).await.expect("cleanup");
}

#[tokio::test]
async fn killed_holder_process_hands_off_within_ttl_plus_one_second() {
    let h = harness().await;
    let url = format!("etcd://{}/{}?ttl=2s", shared::etcd().await.endpoints.join(","), h.prefix());
    let mut holder = tokio::process::Command::new(env!("CARGO_BIN_EXE_hold_lock"))
        .args([url.as_str(), "killed-holder"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the hold_lock helper");
    let mut lines = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    let held = timeout(BOUND, lines.next_line()).await.expect("the helper holds").expect("read").expect("a line");
    assert!(held.starts_with("held "), "{held}");
    let waiter = h.client().await;
    let name = "killed-holder";
    let w = waiter.clone();
    let waiting = tokio::spawn(async move { (w.lock(name).await.expect("lock"), Instant::now()) });
    wait_for_queue(waiter.as_ref(), name, BOUND, "the waiter to queue", |i| i.waiters.len() == 1).await;
    let killed_at = Instant::now();
    holder.start_kill().expect("SIGKILL the holder");
    let (guard, acquired_at) = timeout(BOUND, waiting).await.expect("the waiter acquires").expect("task");
    let handoff = acquired_at - killed_at;
    assert!(handoff <= h.ttl() + Duration::from_secs(1), "hand-off took {handoff:?}, more than TTL + 1 s");
    guard.release().await.expect("release");
}

#[tokio::test]
async fn waiters_keep_their_order_across_an_etcd_restart() {
    let mut cluster = EtcdCluster::start(1).await.expect("a dedicated etcd");
    let h = EtcdHarness::new(cluster.endpoints()).await;
    let holder = h.client().await;
    let guard = holder.lock("restart").await.expect("lock");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..3 {
        let (client, order) = (h.client().await, order.clone());
        waiters.push(tokio::spawn(async move {
            let g = client.lock("restart").await.expect("waiter lock");
            order.lock().unwrap().push(i);
            g.release().await.expect("release");
        }));
        wait_for_queue(holder.as_ref(), "restart", BOUND, "waiter to queue", |info| info.waiters.len() == i + 1).await;
    }
    cluster.members[0].process.restart().expect("restart etcd");
    cluster.wait_ready().await.expect("etcd back");
    let info =
        wait_for_queue(holder.as_ref(), "restart", BOUND, "the queue after the restart", |i| i.waiters.len() == 3)
            .await;
    assert_eq!(info.holder.map(|e| e.token), Some(guard.fencing_token()), "the holder kept the lock");
    assert!(guard.is_held());
    guard.release().await.expect("release after the restart");
    for w in waiters {
        timeout(BOUND, w).await.expect("waiters acquire after the restart").expect("task");
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
}

#[tokio::test]
async fn leader_loss_gives_no_second_holder_and_the_handoff_still_happens() {
    let mut cluster = EtcdCluster::start(3).await.expect("a dedicated 3-node etcd");
    // A lease that outlives the election by far, even with the other tests' servers on the same
    // 2 cores: the holder must not lose the lock to a leader change, while it could lose it to
    // its own clock margin if the new leader took longer than the TTL to answer.
    let h = EtcdHarness::new(cluster.endpoints()).await.with_ttl(Duration::from_secs(6));
    let leader = cluster.leader().await.expect("a leader");
    let kill = async {
        cluster.members[leader].process.kill();
        cluster.wait_writable().await.expect("a new leader");
    };
    scenarios::leader_loss_keeps_one_holder(&h, kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_waiters_are_served_in_queue_order() {
    scenarios::served_in_queue_order(&harness().await, 200).await;
}

#[tokio::test]
async fn waiter_cut_off_past_its_ttl_gets_session_expired_never_the_lock() {
    let h = harness().await;
    let holder = h.client().await;
    let guard = holder.lock("cut-waiter").await.expect("lock");
    let (waiter, faults) = h.faulty_client().await;
    let w = waiter.clone();
    let waiting = tokio::spawn(async move { w.lock("cut-waiter").await });
    wait_for_queue(holder.as_ref(), "cut-waiter", BOUND, "the waiter to queue", |i| i.waiters.len() == 1).await;
    faults.cut().await;
    // The server expires the waiter's lease after the TTL: its key leaves the queue.
    wait_for_queue(holder.as_ref(), "cut-waiter", BOUND, "the waiter's lease to expire", |i| i.waiters.is_empty())
        .await;
    guard.release().await.expect("release"); // the lock is free now: a buggy waiter would take it
    faults.heal().await;
    match timeout(BOUND, waiting).await.expect("the waiter returns").expect("task") {
        Err(distlock::LockError::SessionExpired { .. }) => {}
        Err(other) => panic!("expected SessionExpired, got {other}"),
        Ok(g) => panic!("a waiter whose lease expired got the lock (token {})", g.fencing_token()),
    }
    assert_eq!(waiter.session_state(), distlock::SessionState::Expired);
}

#[tokio::test]
async fn a_lock_call_on_a_lease_the_server_already_expired_gets_session_expired() {
    // The race behind a rare failure of the test above: the queue Txn's reply was lost, the
    // lease expired meanwhile, and the retried Txn (a put with our lease) hears "lease not
    // found" before the keepalive task notices. Revoking the lease and queuing at once makes
    // that order the likely one, and then the answer must be SessionExpired. In the other order
    // the keepalive hears of it first, and the call rightly goes to a new session (a new lease).
    let h = harness().await;
    let endpoints = shared::etcd().await.endpoints.clone();
    let locks = h.builder(&endpoints).connect().await.expect("a client");
    let lease = locks.backend().lease_id();
    let mut admin = distlock_tests::etcd::connect(&endpoints).await.expect("an admin client");
    admin.lease_revoke(lease).await.expect("revoke the client's lease");
    match locks.lock("revoked-lease").await {
        Err(distlock::LockError::SessionExpired { .. }) => {
            assert_eq!(locks.session_state(), distlock::SessionState::Expired);
        }
        Err(other) => panic!("expected SessionExpired, got {other}"),
        Ok(g) => {
            let owner = locks.inspect("revoked-lease").await.expect("inspect").holder.expect("a holder").owner;
            assert!(
                locks.backend().lease_id() != lease && !owner.ends_with(&format!("/{lease:x}")),
                "a client whose lease is gone got the lock on it (token {}, key {owner})",
                g.fencing_token()
            );
        }
    }
}

#[tokio::test]
async fn a_waiter_survives_compaction_and_restart() {
    let mut cluster = EtcdCluster::start(1).await.expect("a dedicated etcd");
    let h = EtcdHarness::new(cluster.endpoints()).await;
    let holder = h.client().await;
    let guard = holder.lock("compacted").await.expect("lock");
    let waiter = h.client().await;
    let w = waiter.clone();
    let waiting = tokio::spawn(async move { w.lock("compacted").await.expect("lock") });
    wait_for_queue(holder.as_ref(), "compacted", BOUND, "the waiter to queue", |i| i.waiters.len() == 1).await;
    // Move the revision on and compact the history the waiter's watch started from, then restart
    // etcd so that the watch must be re-created from that revision: it learns of the compaction
    // and re-reads the queue instead.
    let mut admin = cluster.client().await.expect("admin");
    for i in 0..20 {
        admin.put(format!("noise/{i}"), "x", None).await.expect("put");
    }
    let revision = admin.get("noise/0", None).await.expect("get").header().expect("header").revision();
    admin.compact(revision, None).await.expect("compact");
    cluster.members[0].process.restart().expect("restart");
    cluster.wait_ready().await.expect("etcd back");
    assert!(!waiting.is_finished());
    guard.release().await.expect("release");
    let next = timeout(BOUND, waiting).await.expect("the waiter acquires after compaction").expect("task");
    next.release().await.expect("release");
}

/// Waits until the member's metric `name` (a gauge) reads `value`.
async fn metric_reaches(member: &distlock_tests::etcd::EtcdMember, name: &str, value: f64) -> Result<(), String> {
    wait_for(&format!("{name} = {value}"), BOUND, || async {
        match member.metric(name).await {
            Some(v) if v == value => Ok(()),
            other => Err(format!("{name} = {other:?}, waiting for {value}")),
        }
    })
    .await
}

/// Waits until the member has exactly one watch stream carrying `watchers` watches.
async fn watches_on_one_stream(member: &distlock_tests::etcd::EtcdMember, watchers: f64) -> Result<(), String> {
    metric_reaches(member, "etcd_debugging_mvcc_watcher_total", watchers).await?;
    metric_reaches(member, "etcd_debugging_mvcc_watch_stream_total", 1.0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_locks_share_one_watch_stream_and_a_deleted_key_ends_only_its_own_hold() {
    let mut cluster = EtcdCluster::start(1).await.expect("a dedicated etcd");
    let h = EtcdHarness::new(cluster.endpoints()).await;
    let client = h.client().await;
    let mut guards = Vec::new();
    for i in 0..20 {
        guards.push(client.lock(&format!("many/{i}")).await.expect("lock"));
    }
    // After its grace period every hold watches its own key: 20 watches, all on one stream.
    watches_on_one_stream(&cluster.members[0], 20.0).await.expect("one stream for all holds");

    // An operator deletes one held key: that hold, and only that one, is lost.
    let mut admin = cluster.client().await.expect("an admin client");
    let key_of = |i: usize, keys: &[String]| {
        keys.iter().find(|k| k.contains(&format!("/many/{i}/"))).cloned().expect("the held key")
    };
    admin.delete(key_of(7, &h.leftovers().await), None).await.expect("delete a held key");
    let reason = timeout(BOUND, guards[7].lost()).await.expect("the loss is noticed");
    assert_eq!(reason, distlock::LossReason::EntryDeleted);
    let still_held: Vec<usize> = (0..20).filter(|&i| guards[i].is_held()).collect();
    assert_eq!(still_held.len(), 19, "only hold 7 is lost: {still_held:?}");

    // The shared stream breaks with a restart; every watch comes back on one new stream.
    cluster.members[0].process.restart().expect("restart etcd");
    cluster.wait_ready().await.expect("etcd back");
    watches_on_one_stream(&cluster.members[0], 19.0).await.expect("the watches re-created on one stream");
    admin = cluster.client().await.expect("an admin client after the restart");
    admin.delete(key_of(3, &h.leftovers().await), None).await.expect("delete another held key");
    let reason = timeout(BOUND, guards[3].lost()).await.expect("the loss is noticed after the restart");
    assert_eq!(reason, distlock::LossReason::EntryDeleted);
    for (i, guard) in guards.into_iter().enumerate() {
        let released = guard.release().await;
        assert_eq!(released.is_ok(), i != 3 && i != 7, "release of hold {i}: {released:?}");
    }
    assert!(h.leftovers().await.is_empty(), "{:?}", h.leftovers().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_watch_nobody_reads_is_dropped_and_the_next_wait_still_ends() {
    let cluster = EtcdCluster::start(1).await.expect("a dedicated etcd");
    let member = &cluster.members[0];
    let h = EtcdHarness::new(cluster.endpoints()).await;
    let (a, b) = (h.client().await, h.client().await);
    let a_waits_behind_b = || async {
        let held = b.lock("kept").await.expect("b locks");
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.lock("kept").await }
        });
        wait_for_queue(b.as_ref(), "kept", BOUND, "a to queue behind b", |i| i.waiters.len() == 1).await;
        held.release().await.expect("b releases");
        let guard = timeout(BOUND, waiting).await.expect("a acquires").expect("a's task").expect("a's lock");
        guard.release().await.expect("a releases");
    };
    // A waited behind B: its session keeps that watch on B's key for the next time.
    a_waits_behind_b().await;
    metric_reaches(member, "etcd_debugging_mvcc_watcher_total", 1.0).await.expect("a keeps one watch");
    // B takes and gives back the lock 20 times; every deletion of its key goes to A's kept
    // watch, which nobody reads. After 16 the watch is dropped and cancelled on the server.
    for _ in 0..20 {
        b.lock("kept").await.expect("b locks").release().await.expect("b releases");
    }
    metric_reaches(member, "etcd_debugging_mvcc_watcher_total", 0.0).await.expect("the unread watch is cancelled");
    // Waiting behind B again, A finds its kept watch dropped, re-creates it, and is served.
    a_waits_behind_b().await;
}

/// etcd with authentication on (a user per service, a role per lock prefix): the URL's user
/// locks as usual; a wrong password, a prefix the role may not touch and a missing user each
/// get a final (not retryable) error that says what to fix, and leave nothing behind.
#[tokio::test]
async fn with_auth_on_a_granted_user_locks_and_bad_credentials_fail_clearly_and_finally() {
    use distlock_etcd::etcd_client::{ConnectOptions, Permission};
    let cluster = EtcdCluster::start(1).await.expect("a dedicated etcd");
    let endpoint = cluster.endpoints().join(",");
    let mut admin = cluster.client().await.expect("a client");
    admin.user_add("root", "rootpw", None).await.expect("add root");
    admin.user_grant_role("root", "root").await.expect("root role");
    admin.role_add("orders").await.expect("add role");
    admin.role_grant_permission("orders", Permission::read_write("orders/").with_prefix()).await.expect("grant");
    admin.user_add("app", "secret", None).await.expect("add app");
    admin.user_grant_role("app", "orders").await.expect("grant role");
    admin.role_add("pay").await.expect("add role");
    admin.role_grant_permission("pay", Permission::read_write("orders/42/pay/").with_prefix()).await.expect("grant");
    admin.user_add("payer", "secret", None).await.expect("add payer");
    admin.user_grant_role("payer", "pay").await.expect("grant role");
    admin.role_add("sem").await.expect("add role");
    let semaphore = distlock_etcd::layout::semaphore_prefix("orders", "42/api");
    admin.role_grant_permission("sem", Permission::read_write(semaphore).with_prefix()).await.expect("grant");
    admin.user_add("permits", "secret", None).await.expect("add permits");
    admin.user_grant_role("permits", "sem").await.expect("grant role");
    admin.auth_enable().await.expect("auth on");
    let root = ConnectOptions::new().with_user("root", "rootpw");
    let root = distlock_etcd::etcd_client::Client::connect(cluster.endpoints(), Some(root)).await.expect("root");

    scenarios::two_instances_exclude_each_other(&format!("etcd://app:secret@{endpoint}/orders?ttl=2s"), "42/pay").await;
    // A role granted only one lock's own keys, not its release marker: releases and wake-ups
    // go without the marker (the woken waiter reads the queue), and still hand off in order.
    scenarios::three_instances_take_turns(&format!("etcd://payer:secret@{endpoint}/orders?ttl=2s"), "42/pay").await;
    // A role granted only one semaphore's queue, not the permit mailboxes: releases hand
    // nothing on, waiters wait by watches, and still in order.
    let permits = format!("etcd://permits:secret@{endpoint}/orders?ttl=2s");
    scenarios::three_instances_take_turns_on(&permits, "42/api", Some(1)).await;

    scenarios::refused(&format!("etcd://app:wrong@{endpoint}/orders?ttl=2s"), "42/pay", "password").await;
    scenarios::refused(&format!("etcd://app:secret@{endpoint}/billing?ttl=2s"), "42/pay", "permission").await;
    scenarios::refused(&format!("etcd://{endpoint}/orders?ttl=2s"), "42/pay", "user").await;
    for prefix in ["orders/", "billing/"] {
        // The markers go with the sessions' leases, which the dropped clients revoke.
        let left = wait_for("nothing left behind", BOUND, || {
            let mut root = root.clone();
            async move {
                let keys = root.get(prefix, Some(distlock_etcd::etcd_client::GetOptions::new().with_prefix())).await;
                let keys: Vec<String> =
                    keys.expect("read").kvs().iter().map(|kv| format!("{:?}", kv.key_str())).collect();
                keys.is_empty().then_some(()).ok_or(keys)
            }
        })
        .await;
        assert_eq!(left, Ok(()), "nothing left behind under {prefix}");
    }
}

/// etcd over TLS: `etcds://` with the server's CA in `ca=` locks as over plain TCP. Without the
/// CA the server's certificate is not trusted, and an unreadable CA file is a setting error:
/// each fails within the connect timeout, and says so.
#[tokio::test]
async fn over_tls_with_the_servers_ca_and_a_client_certificate_locks_and_each_missing_piece_fails_clearly() {
    let certs = distlock_tests::tls::TestCertificates::new().expect("test certificates");
    let cluster = EtcdCluster::start_tls(1, &certs).await.expect("an etcd serving TLS, client certificates required");
    let endpoint = cluster.tls_endpoints().join(",");
    let (ca, cert, key) = (certs.ca_cert.display(), certs.client_cert.display(), certs.client_key.display());
    let url = format!("etcds://{endpoint}/tls?ttl=2s&ca={ca}&cert={cert}&key={key}");
    scenarios::two_instances_exclude_each_other(&url, "report").await;

    for (missing, path) in [
        (format!("etcds://{endpoint}/tls?ca=/nonexistent/ca.pem&cert={cert}&key={key}"), "/nonexistent/ca.pem"),
        (format!("etcds://{endpoint}/tls?ca={ca}&cert={cert}&key=/nonexistent/client.key"), "/nonexistent/client.key"),
    ] {
        let err = distlock::connect(&missing).await.err().expect("no such file");
        assert!(matches!(err, distlock::LockError::InvalidConfig { .. }), "{err:?}");
        assert!(err.to_string().contains(path), "{err}");
    }

    let started = Instant::now();
    let untrusted = format!("etcds://{endpoint}/tls?connect_timeout=2s&cert={cert}&key={key}");
    let err = distlock::connect(&untrusted).await.err().expect("the system roots do not trust the test CA");
    assert!(matches!(err, distlock::LockError::InvalidConfig { .. }), "a setting to fix, final: {err:?}");
    assert!(err.to_string().contains("not trusted") && err.to_string().contains("ca="), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded: {:?}", started.elapsed());

    let started = Instant::now();
    let anonymous = format!("etcds://{endpoint}/tls?connect_timeout=2s&ca={ca}");
    let err = distlock::connect(&anonymous).await.err().expect("the server requires a client certificate");
    // Either the client reads the server's TLS alert (a setting to fix, final), or it sees only
    // the connection closed, and the error names the likely fix.
    assert!(
        matches!(err, distlock::LockError::InvalidConfig { .. } | distlock::LockError::Unreachable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("client certificate") && err.to_string().contains("cert="), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded: {:?}", started.elapsed());
}

/// `etcdctl elect` (Go's `concurrency.Election`) and distlock campaign on the same election and
/// elect one leader at a time, each way; `etcdctl elect -l` prints distlock's leader, its
/// proclaimed value and each change.
#[tokio::test]
async fn etcdctl_elect_and_distlock_elect_one_leader_each_way() {
    let h = harness().await;
    let endpoints = shared::etcd().await.endpoints.clone();
    let name = "election";
    let go_name = format!("{}/{name}", h.prefix());
    let ours = h.client().await;
    let mut listener = peer_process::etcdctl_elect(&endpoints, &["-l", &go_name]);

    // Go leads, distlock waits. etcdctl prints the leader's key and value once elected.
    let mut go = peer_process::etcdctl_elect(&endpoints, &[&go_name, "go-1"]);
    go.line(BOUND, |l| l == "go-1").await;
    listener.line(BOUND, |l| l == "go-1").await;
    let leader = ours.leader(name).await.expect("leader").expect("Go leads");
    assert_eq!(leader.value, "go-1", "distlock reads Go's proposal as the leader's value");
    assert!(ours.try_campaign(name, "distlock-1").await.expect("try_campaign").is_none());
    let candidate = ours.clone();
    let waiting = tokio::spawn(async move {
        let leadership = candidate.campaign(name, "distlock-1").await.expect("campaign");
        (Instant::now(), leadership)
    });
    wait_for_queue(ours.as_ref(), name, BOUND, "distlock to queue behind etcdctl", |i| i.waiters.len() == 1).await;
    let resigning_at = Instant::now();
    go.signal(libc::SIGINT); // etcdctl resigns on SIGINT
    let (elected_at, leadership) = timeout(BOUND, waiting).await.expect("distlock is elected").expect("task");
    assert!(elected_at >= resigning_at && leadership.term() > leader.term);
    listener.line(BOUND, |l| l == "distlock-1").await;
    go.exited(BOUND).await.expect("etcdctl exits after resigning");

    // distlock leads, Go waits; the listener sees the proclaimed value, then Go's.
    let mut go = peer_process::etcdctl_elect(&endpoints, &[&go_name, "go-2"]);
    wait_for_queue(ours.as_ref(), name, BOUND, "etcdctl to queue behind distlock", |i| i.waiters.len() == 1).await;
    leadership.proclaim("distlock-2").await.expect("proclaim");
    listener.line(BOUND, |l| l == "distlock-2").await;
    assert!(!go.printed(|l| l == "go-2"), "etcdctl was elected while distlock leads");
    let resigned_at = Instant::now();
    leadership.resign().await.expect("resign");
    let (elected_at, _) = go.line(BOUND, |l| l == "go-2").await;
    assert!(elected_at >= resigned_at);
    listener.line(BOUND, |l| l == "go-2").await;
    assert_eq!(ours.leader(name).await.expect("leader").map(|l| l.value), Some("go-2".to_owned()));
    go.signal(libc::SIGINT);
    go.exited(BOUND).await.expect("etcdctl exits after resigning");
}
