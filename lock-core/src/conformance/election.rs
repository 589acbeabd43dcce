//! Leader election: one leader at a time in campaign order, terms that fence, a fenced
//! proclaim, resign that hands on at once, observers that see every term in order, candidates
//! whose session dies never elected, and cancellation that leaves nothing behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{unique_name, wait_for_queue, within, Harness, PROMPTLY};
use crate::{DistributedLock, Leader, LeaderObserver, Leadership, LockError};

/// Starts `candidate`'s campaign for `name` in a task and waits until `observer` sees it queued
/// as the `place`-th entry (0 = leader).
async fn campaign_in_line(
    observer: &dyn DistributedLock,
    candidate: Arc<dyn DistributedLock>,
    name: &str,
    value: &str,
    place: usize,
) -> tokio::task::JoinHandle<(Instant, Leadership)> {
    let what = format!("candidate {value} to queue");
    let (name_owned, value) = (name.to_owned(), value.to_owned());
    let campaigning = tokio::spawn(async move {
        let leadership = candidate.campaign(&name_owned, &value).await.expect("campaign");
        (Instant::now(), leadership)
    });
    wait_for_queue(observer, name, PROMPTLY, &what, |i| i.waiters.len() + usize::from(i.holder.is_some()) > place)
        .await;
    campaigning
}

/// Waits until `reader.leader(name)` reads `expected`, promptly, after another client's change:
/// ZooKeeper's `sync` is not a quorum operation (ZOOKEEPER-1675), so a read on the ensemble's
/// leader itself may miss a change another member has applied for a moment. Panics with the
/// last read.
async fn leader_becomes(reader: &dyn DistributedLock, name: &str, expected: Option<Leader>, what: &str) {
    let read = super::wait_for(what, PROMPTLY, || async {
        match reader.leader(name).await {
            Ok(leader) if leader == expected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    if let Err(last) = read {
        panic!("timed out after {PROMPTLY:?} waiting for {what}: leader() read {last}, not {expected:?}");
    }
}

/// The next change `observer` reports, promptly.
async fn next_change(observer: &mut LeaderObserver, what: &str) -> Option<Leader> {
    within(PROMPTLY, what, observer.next()).await.expect("observe")
}

/// One leader at a time, elected in campaign order; each later leader has a greater term; the
/// leader's value is what `leader()` reads; `resign()` elects the next candidate at once.
pub async fn election_elects_in_campaign_order(h: &dyn Harness) {
    let name = unique_name("election-order");
    let reader = h.client().await;
    assert_eq!(reader.leader(&name).await.expect("leader"), None, "nobody campaigns yet");
    let first = h.client().await.campaign(&name, "a").await.expect("a campaigns");
    let b = campaign_in_line(reader.as_ref(), h.client().await, &name, "b", 1).await;
    let c = campaign_in_line(reader.as_ref(), h.client().await, &name, "c", 2).await;
    let leader = reader.leader(&name).await.expect("leader");
    assert_eq!(leader, Some(Leader { value: "a".into(), term: first.term() }));
    assert!(!b.is_finished() && !c.is_finished(), "a candidate was elected beside the leader");

    let (term_a, resigned_at) = (first.term(), Instant::now());
    first.resign().await.expect("a resigns");
    let (elected_at, second) = within(PROMPTLY, "b is elected after a resigns", b).await.expect("b");
    assert!(elected_at - resigned_at < Duration::from_secs(2), "b took {:?}", elected_at - resigned_at);
    assert!(second.term() > term_a);
    assert_eq!(second.value(), "b");
    assert!(!c.is_finished(), "c was elected while b leads");
    let term_b = second.term();
    drop(second); // dropping resigns too
    let (_, third) = within(PROMPTLY, "c is elected after b's leadership was dropped", c).await.expect("c");
    assert!(third.term() > term_b);
    let c_leads = Some(Leader { value: "c".into(), term: third.term() });
    leader_becomes(reader.as_ref(), &name, c_leads, "leader() to read c").await;
    third.resign().await.expect("c resigns");
    leader_becomes(reader.as_ref(), &name, None, "leader() to read nobody after c resigned").await;
}

/// `proclaim` changes the published value and keeps the term; a leader whose entry is gone
/// gets `Lost` and changes nothing.
pub async fn proclaim_changes_the_value_and_is_fenced(h: &dyn Harness) {
    let name = unique_name("election-proclaim");
    let candidates = h.client().await;
    let leadership = candidates.campaign(&name, "starting").await.expect("campaign");
    leadership.proclaim("serving").await.expect("proclaim");
    assert_eq!(leadership.value(), "serving");
    let read = candidates.leader(&name).await.expect("leader");
    assert_eq!(read, Some(Leader { value: "serving".into(), term: leadership.term() }), "same term, new value");

    h.delete_holder(&name).await;
    within(PROMPTLY, "the leader learns its entry was deleted", leadership.lost()).await;
    let next = h.client().await.campaign(&name, "next").await.expect("the next campaign");
    let refused = leadership.proclaim("stale").await;
    assert!(matches!(refused, Err(LockError::Lost { .. })), "a deposed leader proclaimed: {refused:?}");
    let read = candidates.leader(&name).await.expect("leader");
    assert_eq!(read, Some(Leader { value: "next".into(), term: next.term() }), "the stale proclaim changed nothing");
    drop(leadership);
    next.resign().await.expect("resign");
}

/// An observer reports the leader at the start, then every change in term order: a new
/// leader after a resign, after a session's end, a proclaimed value, and nobody leading.
pub async fn observers_see_every_term_in_order(h: &dyn Harness) {
    let name = unique_name("election-observe");
    let watcher = h.client().await;
    let mut observer = watcher.observe(&name).await.expect("observe");
    assert_eq!(next_change(&mut observer, "the first report").await, None, "nobody leads yet");

    let a = h.client().await.campaign(&name, "a").await.expect("a campaigns");
    let (b_client, b_faults) = h.faulty_client().await;
    let b = campaign_in_line(watcher.as_ref(), b_client, &name, "b", 1).await;
    let c = campaign_in_line(watcher.as_ref(), h.client().await, &name, "c", 2).await;
    assert_eq!(next_change(&mut observer, "a elected").await, Some(Leader { value: "a".into(), term: a.term() }));

    a.resign().await.expect("a resigns");
    let (_, b) = within(PROMPTLY, "b is elected", b).await.expect("b");
    assert_eq!(next_change(&mut observer, "b elected").await, Some(Leader { value: "b".into(), term: b.term() }));
    b.proclaim("b2").await.expect("b proclaims");
    assert_eq!(next_change(&mut observer, "b's new value").await, Some(Leader { value: "b2".into(), term: b.term() }));

    b_faults.expire_session().await;
    let (_, c) = within(PROMPTLY, "c is elected after b's session ends", c).await.expect("c");
    assert!(c.term() > b.term());
    assert_eq!(next_change(&mut observer, "c elected").await, Some(Leader { value: "c".into(), term: c.term() }));
    drop(b);
    c.resign().await.expect("c resigns");
    assert_eq!(next_change(&mut observer, "nobody leads").await, None);
}

/// A candidate whose session expires while it waits gets an error, never leadership; its
/// entry is gone, so the leader's resign leaves nobody leading.
pub async fn candidate_whose_session_expires_is_never_elected(h: &dyn Harness) {
    let name = unique_name("election-expired-candidate");
    let leader_client = h.client().await;
    let leadership = leader_client.campaign(&name, "leader").await.expect("campaign");
    let (candidate, faults) = h.faulty_client().await;
    let (name_owned, candidate_owned) = (name.clone(), candidate.clone());
    let campaigning = tokio::spawn(async move { candidate_owned.campaign(&name_owned, "doomed").await });
    wait_for_queue(leader_client.as_ref(), &name, PROMPTLY, "the candidate to queue", |i| i.waiters.len() == 1).await;
    faults.expire_session().await;
    let result = within(PROMPTLY, "the expired candidate's campaign ends", campaigning).await.expect("task");
    assert!(matches!(result, Err(LockError::SessionExpired { .. })), "expected SessionExpired, got {result:?}");
    leadership.resign().await.expect("resign");
    assert_eq!(leader_client.leader(&name).await.expect("leader"), None, "the expired candidate was elected");
}

/// A leader cut off from the server learns of its loss no later than the next candidate is
/// elected, with a greater term.
pub async fn cut_off_leader_learns_before_a_successor_is_elected(h: &dyn Harness) {
    let name = unique_name("election-cut-leader");
    let (leader_client, faults) = h.faulty_client().await;
    let leadership = leader_client.campaign(&name, "old").await.expect("campaign");
    let lost = leadership.lost_token();
    let lost_at = tokio::spawn(async move {
        lost.cancelled().await;
        Instant::now()
    });
    let successor = campaign_in_line(leader_client.as_ref(), h.client().await, &name, "new", 1).await;
    faults.cut().await;
    let bound = h.ttl() * 2 + Duration::from_secs(5);
    let (elected_at, next) = within(bound, "the successor is elected", successor).await.expect("successor");
    let lost_at = within(Duration::from_secs(1), "the old leader learns", lost_at).await.expect("loss task");
    assert!(lost_at <= elected_at, "the old leader learned {:?} after its successor was elected", lost_at - elected_at);
    assert!(next.term() > leadership.term());
    assert!(!leadership.is_leader());
    faults.heal().await;
    drop(leadership);
    next.resign().await.expect("resign");
}

/// `try_campaign` and `campaign_timeout` do not wait for a leader to go, leave no entry, and a
/// dropped `campaign` future withdraws its candidacy.
pub async fn giving_up_a_campaign_leaves_nothing(h: &dyn Harness) {
    let name = unique_name("election-give-up");
    let (a, b) = (h.client().await, h.client().await);
    let leadership = a.campaign(&name, "a").await.expect("campaign");
    assert!(b.try_campaign(&name, "b").await.expect("try_campaign").is_none());
    let timed_out = b.campaign_timeout(&name, "b", Duration::from_millis(300)).await.expect("campaign_timeout");
    assert!(timed_out.is_none());
    let info = a.inspect(&name).await.expect("inspect");
    assert!(info.waiters.is_empty(), "a candidate that gave up left an entry: {info:?}");

    let dropped = campaign_in_line(a.as_ref(), b.clone(), &name, "b", 1).await;
    dropped.abort();
    let _ = dropped.await;
    wait_for_queue(a.as_ref(), &name, PROMPTLY, "the withdrawn candidate's entry to go", |i| i.waiters.is_empty())
        .await;
    leadership.resign().await.expect("resign");
    let again = b.try_campaign(&name, "b").await.expect("try_campaign").expect("elected when nobody leads");
    assert!(again.is_leader());
    again.resign().await.expect("resign");
}
