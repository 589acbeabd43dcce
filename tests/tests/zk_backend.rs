//! ZooKeeper-specific behaviour on real servers: URL connection, a Curator holder written by
//! hand, leader loss, the whole ensemble down and back, long queues, and interop with real
//! Curator (LeaderLatch, InterProcessReadWriteLock).

use std::time::Duration;

use distlock_core::conformance::{wait_for_queue, Harness};
use distlock_core::DistributedLock;
use distlock_tests::{peer_process, scenarios, shared, ZkEnsemble, ZkHarness};
use distlock_zk::zookeeper_client::{Acls, CreateMode};
use tokio::time::{timeout, Instant};

const BOUND: Duration = Duration::from_secs(30);

async fn harness() -> ZkHarness {
    ZkHarness::new(shared::zookeeper().await.endpoints.clone()).await
}

#[tokio::test]
async fn connect_by_url_and_refuse_unreachable_hosts_quickly() {
    let h = harness().await;
    let url = format!("zk://{}{}?session_timeout=2s", shared::zookeeper().await.endpoints.join(","), h.chroot());
    let locks = distlock::connect(&url).await.expect("connect by URL");
    let guard = locks.lock("by-url").await.expect("lock");
    let nodes = h.lock_nodes().await.expect("list");
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].starts_with(&format!("{}/by-url/_c_", h.chroot())), "Curator's layout: {nodes:?}");
    guard.release().await.expect("release");

    let started = Instant::now();
    let dead = format!("zk://127.0.0.1:{}?connect_timeout=2s", distlock_tests::ports::free_port());
    let err = distlock::connect(&dead).await.err().expect("nothing listens there");
    assert!(err.is_retryable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(6), "bounded by the connect timeout: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_curator_holder_written_by_hand_is_respected() {
    let h = harness().await;
    let dir = format!("{}/curator", h.chroot());
    // What Curator's InterProcessMutex creates: a protected ephemeral sequential znode.
    let curator = distlock_tests::zk::connect(&shared::zookeeper().await.endpoints.join(","), Duration::from_secs(4))
        .await
        .expect("a second session, as the Java service");
    curator.mkdir(&dir, &CreateMode::Container.with_acls(Acls::anyone_all())).await.expect("mkdir");
    let prefix = format!("{dir}/_c_{}-lock-", uuid::Uuid::new_v4());
    let (_, sequence) = curator
        .create(&prefix, b"", &CreateMode::EphemeralSequential.with_acls(Acls::anyone_all()))
        .await
        .expect("the Curator holder's znode");
    let ours = h.client().await;
    assert!(ours.try_lock("curator").await.expect("try_lock").is_none(), "distlock sees Curator's hold");
    let waiter = ours.clone();
    let waiting = tokio::spawn(async move { waiter.lock("curator").await.expect("lock") });
    wait_for_queue(ours.as_ref(), "curator", BOUND, "distlock to queue behind Curator", |i| i.waiters.len() == 1).await;
    assert!(!waiting.is_finished());
    curator.delete(&format!("{prefix}{sequence}"), None).await.expect("Curator releases");
    let guard = timeout(BOUND, waiting).await.expect("distlock acquires after Curator").expect("task");
    guard.release().await.expect("release");
}

#[tokio::test]
async fn leader_loss_gives_no_second_holder_and_the_handoff_still_happens() {
    let mut ensemble = ZkEnsemble::start(3).await.expect("a dedicated ensemble");
    let h = ZkHarness::new(ensemble.endpoints()).await;
    let leader = ensemble.leader().await.expect("a leader");
    scenarios::leader_loss_keeps_one_holder(&h, async { ensemble.members[leader].process.kill() }).await;
}

#[tokio::test]
async fn whole_ensemble_down_and_back_leaves_exactly_one_holder() {
    let mut ensemble = ZkEnsemble::start(3).await.expect("a dedicated ensemble");
    let h = ZkHarness::new(ensemble.endpoints()).await;
    let holder = h.client().await;
    let guard = holder.lock("outage").await.expect("lock");
    let waiter = h.client().await;
    let w = waiter.clone();
    let waiting = tokio::spawn(async move { w.lock("outage").await });
    wait_for_queue(holder.as_ref(), "outage", BOUND, "the waiter to queue", |i| i.waiters.len() == 1).await;
    let down_at = Instant::now();
    for member in &mut ensemble.members {
        member.process.kill();
    }
    // With no server, the holder must stop trusting its lock within the session timeout.
    timeout(h.ttl() + Duration::from_secs(1), guard.lost()).await.expect("lost() fires while the ensemble is down");
    assert!(down_at.elapsed() <= h.ttl(), "lost() fired {:?} after the outage began", down_at.elapsed());
    assert!(!waiting.is_finished(), "nobody acquires while the ensemble is down");
    for member in &mut ensemble.members {
        member.process.restart().expect("restart");
    }
    ensemble.wait_ready().await.expect("the ensemble is back");
    drop(guard); // what an application does on lost(): give the hold up
    let outcome = timeout(BOUND, waiting).await.expect("the waiter finishes").expect("task");
    let next = match outcome {
        Ok(next) => next,
        // The waiter's session may have expired during the outage, or its wait's requests may
        // have run out of retries before the ensemble was back (a retryable error): then it holds
        // nothing, and asking again gets the lock.
        Err(error) if error.is_retryable() => {
            timeout(BOUND, waiter.lock("outage")).await.expect("asking again acquires").expect("lock")
        }
        Err(other) => panic!("unexpected error after the outage: {other}"),
    };
    let info = next_info(&h).await;
    assert_eq!(info.0, 1, "exactly one holder after the outage: {info:?}");
    assert_eq!(info.1, Some(next.fencing_token()));
    next.release().await.expect("release");
}

async fn next_info(h: &ZkHarness) -> (usize, Option<distlock::FencingToken>) {
    let client = h.client().await;
    let info = client.inspect("outage").await.expect("inspect");
    (usize::from(info.holder.is_some()), info.holder.map(|e| e.token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_waiters_are_served_in_queue_order() {
    scenarios::served_in_queue_order(&harness().await, 200).await;
}

#[tokio::test]
async fn tokens_keep_growing_when_the_lock_directory_is_recreated() {
    let h = harness().await;
    let client = h.client().await;
    let first = client.lock("container").await.expect("lock");
    let (t1, node1) = (first.fencing_token(), h.lock_nodes().await.expect("list"));
    first.release().await.expect("release");
    // The empty container directory is reaped by the server; the next lock recreates it and its
    // sequence numbers start again from zero.
    let dir = format!("{}/container", h.chroot());
    distlock_tests::retry_until(BOUND, || async {
        match h.admin().check_stat(&dir).await {
            Ok(None) => Ok(()),
            _ => Err(()),
        }
    })
    .await
    .expect("the server removes the empty lock directory");
    let second = client.lock("container").await.expect("lock");
    let node2 = h.lock_nodes().await.expect("list");
    assert!(node1[0].ends_with("lock-0000000000") && node2[0].ends_with("lock-0000000000"), "{node1:?} {node2:?}");
    assert!(second.fencing_token() > t1, "czxid tokens grow even though the sequence restarted");
    second.release().await.expect("release");
}

/// A ZooKeeper tree guarded by a digest ACL: the URL's user locks as usual; a wrong password
/// and a missing user get a final (not retryable) error that names the ACL, and create nothing.
#[tokio::test]
async fn under_a_digest_acl_the_user_locks_and_others_are_refused_clearly_and_finally() {
    let hosts = shared::zookeeper().await.endpoints.join(",");
    let root = format!("/digest-{}", uuid::Uuid::new_v4().simple());
    let admin = distlock_zk::zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(4))
        .with_auth("digest", b"app:secret")
        .connect(&hosts)
        .await
        .expect("admin");
    admin.create(&root, b"", &CreateMode::Persistent.with_acls(Acls::creator_all())).await.expect("the guarded root");

    scenarios::two_instances_exclude_each_other(&format!("zk://app:secret@{hosts}{root}?session_timeout=2s"), "42/pay")
        .await;

    scenarios::refused(&format!("zk://app:wrong@{hosts}{root}?session_timeout=2s"), "43/pay", "ACL").await;
    scenarios::refused(&format!("zk://{hosts}{root}?session_timeout=2s"), "43/pay", "ACL").await;
    let (children, _) = admin.get_children(&root).await.expect("list");
    assert_eq!(children, vec!["42".to_owned()], "the refused clients created nothing");
}

/// An uncontended lock costs ZooKeeper one request to take (a multi that creates our znode and
/// whose reply says it is alone) and one to release. After meeting another holder, the session
/// queues with the listing pipelined instead (two requests, still one round trip), and goes
/// back to one request once it has found itself alone often enough in a row.
#[tokio::test]
async fn an_uncontended_lock_costs_one_request_to_take_and_one_to_release() {
    let h = harness().await;
    let hosts = shared::zookeeper().await.endpoints.clone();
    let ours = h.builder(&hosts).connect().await.expect("connect");
    let other = h.builder(&hosts).connect().await.expect("connect");
    let cheap = || scenarios::take_and_release(&ours, || ours.backend().requests(), "cheap");
    // A persistent directory: a container one may be reaped between cycles, and then the next
    // lock costs two requests more (the refused create and the directory's).
    let dir = format!("{}/cheap", h.chroot());
    h.admin().mkdir(&dir, &CreateMode::Persistent.with_acls(Acls::anyone_all())).await.expect("the lock directory");
    assert_eq!(cheap().await, (1, 1), "take and release, alone");
    assert_eq!(cheap().await, (1, 1), "again");

    let held = other.lock("cheap").await.expect("the other session holds");
    let before = ours.backend().requests();
    assert!(ours.try_lock("cheap").await.expect("try_lock").is_none());
    assert_eq!(ours.backend().requests() - before, 3, "the multi, then a listing, then leaving the queue");
    held.release().await.expect("release");

    for _ in 0..distlock_core::backend::RecentContention::ALONE_TO_FORGET {
        assert_eq!(cheap().await, (2, 1), "met others lately: a create with a pipelined listing");
    }
    assert_eq!(cheap().await, (1, 1), "alone often enough in a row: one request again");
}

/// Curator's LeaderLatch (real Curator, from Debian's libcurator-recipes-java) and distlock
/// campaign on the same path and elect one leader at a time, each way: each reads the other's
/// value as the leader's, and each is elected only once the other gave leadership up.
#[tokio::test]
async fn curator_leader_latch_and_distlock_elect_one_leader_each_way() {
    let h = harness().await;
    let hosts = shared::zookeeper().await.endpoints.join(",");
    let path = format!("{}/latch", h.chroot());
    let ours = h.client().await;

    // Curator leads, distlock waits.
    let mut curator = peer_process::curator_latch(&hosts, &path, "curator-1").await;
    curator.line(BOUND, |l| l == "elected").await;
    let leader = ours.leader("latch").await.expect("leader").expect("Curator leads");
    assert_eq!(leader.value, "curator-1", "distlock reads Curator's participant id as the leader's value");
    assert!(ours.try_campaign("latch", "distlock-1").await.expect("try_campaign").is_none());
    let candidate = ours.clone();
    let waiting = tokio::spawn(async move {
        let leadership = candidate.campaign("latch", "distlock-1").await.expect("campaign");
        (Instant::now(), leadership)
    });
    wait_for_queue(ours.as_ref(), "latch", BOUND, "distlock to queue behind Curator", |i| i.waiters.len() == 1).await;
    let closing_at = Instant::now();
    curator.send("close").await;
    curator.line(BOUND, |l| l == "closed").await;
    let (elected_at, leadership) = timeout(BOUND, waiting).await.expect("distlock is elected").expect("task");
    assert!(elected_at >= closing_at && leadership.term() > leader.term);

    // distlock leads, Curator waits and names distlock's (proclaimed) value as the leader. The
    // proclaim comes before Curator queues: Curator's LeaderLatch re-arms its watch on the znode
    // ahead only when that znode is deleted, so a data change would leave it watching nothing
    // (docs/zookeeper.md says so).
    leadership.proclaim("distlock-2").await.expect("proclaim");
    let mut curator = peer_process::curator_latch(&hosts, &path, "curator-2").await;
    curator.line(BOUND, |l| l == "leader distlock-2").await;
    wait_for_queue(ours.as_ref(), "latch", BOUND, "Curator to queue behind distlock", |i| i.waiters.len() == 1).await;
    assert!(!curator.printed(|l| l == "elected"), "Curator was elected while distlock leads");
    let resigned_at = Instant::now();
    leadership.resign().await.expect("resign");
    let (elected_at, _) = curator.line(BOUND, |l| l == "elected").await;
    assert!(elected_at >= resigned_at);
    let leader = ours.leader("latch").await.expect("leader").expect("Curator leads");
    assert_eq!(leader.value, "curator-2");
    curator.send("close").await;
    curator.line(BOUND, |l| l == "closed").await;
}

/// Curator's InterProcessReadWriteLock (real Curator, from Debian's libcurator-recipes-java) and
/// distlock's read-write lock on the same path, each way: a writer of either keeps the other's
/// readers and writers out until it releases, and readers of both hold together.
#[tokio::test]
async fn curator_read_write_lock_and_distlock_share_and_exclude_each_way() {
    let h = harness().await;
    let hosts = shared::zookeeper().await.endpoints.join(",");
    let path = format!("{}/rw", h.chroot());
    let (ours, other) = (h.client().await, h.client().await);

    // Curator writes: distlock's reader waits for it.
    let mut curator_writer = peer_process::curator_read_write(&hosts, &path, false).await;
    curator_writer.line(BOUND, |l| l == "acquired").await;
    assert!(ours.try_read_lock("rw").await.expect("try_read_lock").is_none(), "distlock reads while Curator writes");
    let reader = ours.clone();
    let reading = tokio::spawn(async move { reader.read_lock("rw").await.expect("read_lock") });
    wait_for_queue(ours.as_ref(), "rw", BOUND, "distlock's reader to queue behind Curator's writer", |i| {
        i.waiters.len() == 1
    })
    .await;
    let released_at = Instant::now();
    curator_writer.send("release").await;
    curator_writer.line(BOUND, |l| l == "released").await;
    let ours_reading = timeout(BOUND, reading).await.expect("distlock reads after Curator's writer").expect("task");
    assert!(Instant::now() >= released_at);

    // distlock reads: Curator's reader holds beside it; Curator's writer waits for both.
    let mut curator_reader = peer_process::curator_read_write(&hosts, &path, true).await;
    curator_reader.line(BOUND, |l| l == "acquired").await;
    let mut curator_writer = peer_process::curator_read_write(&hosts, &path, false).await;
    wait_for_queue(ours.as_ref(), "rw", BOUND, "Curator's writer to queue behind both readers", |i| {
        i.holders().count() == 2 && i.waiters.len() == 1
    })
    .await;
    ours_reading.release().await.expect("release");
    assert!(!curator_writer.printed(|l| l == "acquired"), "Curator's writer got in beside Curator's reader");
    curator_reader.send("release").await;
    curator_reader.line(BOUND, |l| l == "released").await;
    curator_writer.line(BOUND, |l| l == "acquired").await;

    // Curator writes again: distlock's writer waits for it, then holds alone.
    assert!(other.try_write_lock("rw").await.expect("try_write_lock").is_none(), "distlock writes beside Curator");
    let writer = other.clone();
    let writing = tokio::spawn(async move { writer.write_lock("rw").await.expect("write_lock") });
    wait_for_queue(ours.as_ref(), "rw", BOUND, "distlock's writer to queue", |i| i.waiters.len() == 1).await;
    curator_writer.send("release").await;
    curator_writer.line(BOUND, |l| l == "released").await;
    let ours_writing = timeout(BOUND, writing).await.expect("distlock writes after Curator").expect("task");
    let mut curator_reader = peer_process::curator_read_write(&hosts, &path, true).await;
    wait_for_queue(ours.as_ref(), "rw", BOUND, "Curator's reader to queue behind distlock's writer", |i| {
        i.waiters.len() == 1
    })
    .await;
    assert!(!curator_reader.printed(|l| l == "acquired"), "Curator reads while distlock writes");
    ours_writing.release().await.expect("release");
    curator_reader.line(BOUND, |l| l == "acquired").await;
    curator_reader.send("release").await;
    curator_reader.line(BOUND, |l| l == "released").await;
}
