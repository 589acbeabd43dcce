//! Waiting until first, herd-free: a waiter watches only the key its grant rule waits behind
//! (the key just below its own, or a reader's nearest writer) and, unless that key's going alone
//! makes it first (it was the owner when read, or only readers lay below it for a reader), its
//! release marker ([`crate::release_marker`]). A watch that etcd may not have synced yet is
//! backed by reads; a deletion heard without the marker is explained by one read. The lock, the
//! election and the read-write lock share this wait; a permit waits as [`super::permits`] says.

use std::time::Duration;

use distlock_core::backend::Recipe;
use distlock_core::LockError;
use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse};
use tokio::time::Instant;

use super::*;
use crate::place::Place;
use crate::release_marker::{marker_of, markers_refused, MarkerWatch};
use crate::watch::{KeyWatch, WaitEnd, Watched};

impl Queued {
    /// Waits until first: watches only the key the grant rule waits behind, with a watch the
    /// session kept from an earlier wait on the same key, or a new one "from now" (see
    /// [`crate::watch`]). If the server moved on between our read and a new watch's start, one
    /// read covers that gap. Once the predecessor is gone we are first if its going alone grants
    /// us ([`Predecessor::going_grants_us`]) and our lease is surely alive; otherwise one read
    /// finds the key now below ours.
    pub(crate) async fn wait_until_first(mut self) -> Result<Place, LockError> {
        if let Recipe::Permit(_) = self.place.recipe {
            return self.wait_for_permit().await;
        }
        if !self.is_first() {
            let place = &self.place;
            let session = &place.session;
            let during = || format!("waiting for lock {:?}", place.name.as_str());
            let mut predecessor = match self.predecessor.take() {
                Some(p) => Some(p),
                None => recheck(place).await?,
            };
            'wait: while let Some(mut p) = predecessor {
                tracing::debug!(lock = %place.name, token = place.revision, key = %place.key, predecessor = %p.key, predecessor_revision = p.revision, read_at = p.read_at, going_grants_us = p.going_grants_us(), "waiting for the predecessor's key to go");
                // The release marker's watch unless the predecessor owns the lock (then its
                // deletion alone makes us first); it opens while the key's watch does.
                let marker = if p.going_grants_us() { None } else { marker_of(place, &p.key) };
                let mut marker_watch = MarkerWatch::start(session, marker);
                let mut watch = match session.watches.take(&p.key) {
                    Some(kept) => kept,
                    None => tokio::select! {
                        _ = session.life.ended() => return Err(LockError::SessionExpired { during: during() }),
                        watch = KeyWatch::open(session, &p.key, Watched::Deletions) => watch,
                    },
                };
                let keep = |watch: KeyWatch, marker_watch: MarkerWatch| {
                    session.watches.give_back(watch);
                    marker_watch.keep(session);
                };
                if watch.created_at() > p.read_at {
                    // The predecessor may have gone before the watch started: look once.
                    match recheck(place).await? {
                        Some(now) if now.revision == p.revision => p = now,
                        other => {
                            keep(watch, marker_watch);
                            predecessor = other;
                            continue;
                        }
                    }
                }
                let watch_created_at = watch.created_at();
                // A kept watch is as young as when it was opened: one opened by the last wait a
                // few milliseconds ago may still be unsynced, and its polls go on.
                let mut polls = unsynced_polls(p.may_go_soon().then(|| watch.opened_at()), Instant::now());
                // `None`: the predecessor's release marker was written (its holder released).
                let outcome = loop {
                    let poll = async {
                        match polls.peek() {
                            Some(&at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        _ = session.life.ended() => return Err(LockError::SessionExpired { during: during() }),
                        revision = marker_watch.written_after(session, p.revision) => {
                            tracing::debug!(lock = %place.name, token = place.revision, predecessor = %p.key, revision, "heard the predecessor's release marker");
                            break None;
                        }
                        outcome = watch.event_after(session, p.revision) => break Some(outcome),
                        () = poll => {
                            polls.next();
                            match recheck(place).await? {
                                Some(now) if now.revision == p.revision => p = now,
                                other => {
                                    tracing::debug!(lock = %place.name, token = place.revision, "predecessor gone unheard by a new watch: etcd had not synced it yet");
                                    keep(watch, marker_watch);
                                    predecessor = other;
                                    continue 'wait;
                                }
                            }
                        }
                    }
                };
                tracing::debug!(lock = %place.name, token = place.revision, ?outcome, watch_created_at = watch_created_at, "predecessor changed: checking place");
                let lease_surely_alive = session.life.surely_alive();
                // A deletion heard before the marker's write of the same revision: it trails.
                let released = match outcome {
                    None => true,
                    Some(WaitEnd::Happened { .. }) if !p.going_grants_us() && lease_surely_alive => {
                        marker_watch.written_soon(session, p.revision).await
                    }
                    Some(_) => false,
                };
                keep(watch, marker_watch);
                predecessor = match outcome {
                    None | Some(WaitEnd::Happened { .. })
                        if (p.going_grants_us() || released) && lease_surely_alive =>
                    {
                        break
                    }
                    Some(WaitEnd::Happened { revision }) if lease_surely_alive => {
                        match recheck_local(place, &p.key, revision).await? {
                            Recheck::HolderReleased => break,
                            Recheck::Read(predecessor) => predecessor,
                        }
                    }
                    _ => recheck(place).await?,
                };
            }
            tracing::info!(lock = %place.name, token = place.revision, "hand-off: first in the queue");
        }
        self.cleanup.armed = false;
        Ok(self.place)
    }
}

/// How long etcd may leave a new watch unsynced: its loop that catches up watchers in the
/// "unsynced" group runs every 100 ms (`mvcc/watchable_store.go`, `syncWatchersLoop`).
const UNSYNCED_FOR: Duration = Duration::from_millis(100);

/// How often a waiter with a young watch (new, or kept but opened less than [`UNSYNCED_FOR`]
/// ago) looks at the queue itself until etcd has surely synced that watch.
const UNSYNCED_POLL: Duration = Duration::from_millis(10);

/// When, from `now` on, a waiter whose watch was opened at `opened_at` looks at the queue
/// instead of trusting the watch: a watch created "from now" while a write races its creation
/// lands in etcd's unsynced group and hears nothing for up to 100 ms, which a read cuts to
/// 10 ms. That holds for a kept watch too, until 100 ms after it was opened; after that, never.
/// `None` (a long queue ahead): never.
fn unsynced_polls(opened_at: Option<Instant>, now: Instant) -> std::iter::Peekable<impl Iterator<Item = Instant>> {
    let polls = UNSYNCED_FOR.as_millis() / UNSYNCED_POLL.as_millis();
    opened_at
        .into_iter()
        .flat_map(move |at| (1..=polls as u32).map(move |i| at + UNSYNCED_POLL * i))
        .filter(move |&at| at > now)
        .peekable()
}

/// After a wait: confirms our key still exists with our revision (so the lease is alive, etcd
/// issue 11456) and reads the keys now just below ours, in one linearizable Txn.
pub(super) async fn recheck(place: &Place) -> Result<Option<Predecessor>, LockError> {
    let (read_at, response) = read_place(place, "check place in the queue", Some(AHEAD_READ)).await?;
    predecessor_in(place, read_at, response.op_responses().first()).await
}

/// [`recheck`] without a limit, for when keys of locks named below this one filled the limit.
async fn read_all_below(place: &Place) -> Result<Option<Predecessor>, LockError> {
    let (read_at, response) = read_place(place, "read the lock queue", None).await?;
    Ok(predecessor_of(place, read_at, response.op_responses().first()).flatten())
}

/// Sends [`place_read`] as `op`: the read's revision and its response, or the error for our key
/// gone.
pub(super) async fn read_place(
    place: &Place,
    op: &str,
    limit: Option<i64>,
) -> Result<(i64, etcd_client::TxnResponse), LockError> {
    let response = place.session.txn(op, place_read(place, limit)).await?;
    if !response.succeeded() {
        return Err(place_gone(place).await);
    }
    Ok((revision_of(&response), response))
}

/// The error for our key gone while waiting: the session expired, or someone deleted the key.
async fn place_gone(place: &Place) -> LockError {
    let during = format!("waiting for lock {:?}", place.name.as_str());
    if place.session.life.is_ended() || !place.session.lease_alive().await {
        place.session.life.expire();
        return LockError::SessionExpired { during };
    }
    LockError::Backend {
        backend: "etcd",
        op: during,
        retryable: true,
        source: "our queue key was deleted while waiting (by an operator or the lease's expiry); call lock again"
            .into(),
    }
}

/// What [`recheck_local`] found.
#[derive(Debug)]
enum Recheck {
    /// The predecessor's deletion was the holder's own release: we are first.
    HolderReleased,
    /// The predecessor went otherwise (a waiter that left, an expired lease, an operator): the
    /// key now below ours, if any.
    Read(Option<Predecessor>),
}

/// After seeing our predecessor deleted at `deleted_at` without hearing its release marker
/// written, with the lease clock saying our lease is alive (so expiry has not taken our key):
/// one serializable Txn, answered by the member without a round through raft (which waits
/// behind other writes' fsyncs). If our key still has our revision and the predecessor's
/// release marker was written at `deleted_at` (its watch was late), the deletion was the
/// holder's release: nothing older than the predecessor was left then, and nothing older can
/// appear, so we are first, and the queue is not read. Otherwise the Txn reads the keys below
/// ours, as [`recheck`] does: being first is monotonic, so a read at any revision at or after
/// our key's creation that finds none below is final. A member that has not yet applied the
/// deletion we saw (a lagging one) sends us to [`recheck`].
async fn recheck_local(place: &Place, predecessor: &str, deleted_at: i64) -> Result<Recheck, LockError> {
    let session = &place.session;
    let Some(marker) = marker_of(place, predecessor).filter(|_| session.markers.allowed()) else {
        return recheck(place).await.map(Recheck::Read);
    };
    let own_key = GetOptions::new().with_keys_only().with_serializable();
    let below = queue_below(place, Some(AHEAD_READ)).with_serializable();
    let txn = Txn::new()
        .when([
            Compare::create_revision(place.key.as_str(), CompareOp::Equal, place.revision),
            Compare::mod_revision(marker.as_str(), CompareOp::Equal, deleted_at),
        ])
        .and_then(Vec::new())
        .or_else([TxnOp::get(place.key.as_str(), Some(own_key)), TxnOp::get(place.queue_prefix.as_str(), Some(below))]);
    let response = match session.txn("check place in the queue", txn).await {
        Ok(response) => response,
        Err(LockError::Unauthorized { reason, .. }) => {
            markers_refused(session, &reason);
            return recheck(place).await.map(Recheck::Read);
        }
        Err(error) => return Err(error),
    };
    if response.succeeded() {
        tracing::debug!(lock = %place.name, token = place.revision, deleted_at, "the predecessor's deletion was the holder's release: first, without reading the queue");
        return Ok(Recheck::HolderReleased);
    }
    let read_at = revision_of(&response);
    let ops = response.op_responses();
    let own = ops.first().map(kvs).and_then(|k| k.first()).map(KeyValue::create_revision);
    if own != Some(place.revision) || read_at < deleted_at {
        return recheck(place).await.map(Recheck::Read);
    }
    predecessor_in(place, read_at, ops.get(1)).await.map(Recheck::Read)
}

/// The predecessor a limited read of [`queue_below`] at revision `read_at` found, read again
/// without the limit if keys of locks named below this one filled it.
async fn predecessor_in(
    place: &Place,
    read_at: i64,
    below: Option<&TxnOpResponse>,
) -> Result<Option<Predecessor>, LockError> {
    match predecessor_of(place, read_at, below) {
        Some(predecessor) => Ok(predecessor),
        None => read_all_below(place).await,
    }
}

/// The keys just below ours, newest first: `limit` of them, or all (always all for a reader).
fn queue_below(place: &Place, limit: Option<i64>) -> GetOptions {
    let below =
        queue_range().with_max_create_revision(place.revision - 1).with_sort(SortTarget::Create, SortOrder::Descend);
    limited(below, limit.filter(|_| !place.reads_all_below()))
}

/// If our key still has our revision, read [`queue_below`] it.
fn place_read(place: &Place, limit: Option<i64>) -> Txn {
    Txn::new()
        .when([Compare::create_revision(place.key.as_str(), CompareOp::Equal, place.revision)])
        .and_then([TxnOp::get(place.queue_prefix.as_str(), Some(queue_below(place, limit)))])
}

/// The predecessor a read of [`queue_below`] at revision `read_at` found (`Some(None)`: none,
/// we are first); `None` if keys of locks named below this one filled its limit.
fn predecessor_of(place: &Place, read_at: i64, below: Option<&TxnOpResponse>) -> Option<Option<Predecessor>> {
    let below = queue_keys(&place.queue_prefix, below)?;
    Some(Predecessor::from_below(place, &below, read_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::release_txn;
    use crate::place::testing::{place_behind, place_of};

    /// On a real etcd: a waiter that saw its predecessor deleted takes itself for first without
    /// reading the queue only if the deletion was a holder's release, which writes the marker at
    /// the deletion's revision. A plain deletion (a waiter leaving the queue) next to a marker
    /// from an earlier release sends it to read the queue, where the holder still is.
    #[tokio::test]
    async fn only_a_holders_release_makes_the_next_waiter_first_without_a_read() {
        let (place, client, ahead) = place_behind(&["1", "2"]).await;
        let (holder, middle) = (&ahead[0], &ahead[1]);
        let holder_marker = marker_of(&place, &holder.0).expect("the holder's marker");
        let mut kv = client.kv_client();
        kv.put(holder_marker.as_str(), "an earlier release", None).await.expect("an earlier marker");

        let left_at = kv.delete(middle.0.as_str(), None).await.expect("delete").header().expect("header").revision();
        match recheck_local(&place, &middle.0, left_at).await.expect("recheck") {
            Recheck::Read(Some(p)) => {
                assert_eq!((p.key.as_str(), p.revision), (holder.0.as_str(), holder.1), "the holder is read");
                assert!(p.going_grants_us(), "{p:?}");
            }
            other => panic!("a waiter leaving the queue handed the lock on: {other:?}"),
        }

        let release = release_txn(&holder.0, holder.1, &holder_marker, place.session.lease);
        let released_at = kv.txn(release).await.expect("release").header().expect("header").revision();
        let outcome = recheck_local(&place, &holder.0, released_at).await.expect("recheck");
        assert!(matches!(outcome, Recheck::HolderReleased), "{outcome:?}");
        let marker = kv.get(holder_marker.as_str(), None).await.expect("read the marker");
        let marker = marker.kvs().first().expect("the marker");
        assert_eq!(
            (marker.mod_revision(), marker.value(), marker.lease()),
            (released_at, holder.0.as_bytes(), place.session.lease),
            "written with the deletion, naming the released key, on the releaser's lease"
        );
    }

    /// On a real etcd: a reader whose nearest writer has only readers below it takes that
    /// writer's going, whatever it is (its release or its leaving), as its grant: it watches no
    /// marker and reads nothing then. With a writer further below, the writer's going is only a
    /// grant if its marker or a read says so.
    #[tokio::test]
    async fn a_reader_behind_the_only_writer_below_is_granted_by_its_going() {
        let (place, _client, ahead) = place_of(Recipe::Read, &["r1", "r2", "w3"]).await;
        let predecessor = recheck(&place).await.expect("read").expect("a writer below");
        assert_eq!(predecessor.key, ahead[2].0, "the nearest writer");
        assert!(predecessor.going_grants_us(), "only readers below it: {predecessor:?}");

        let (place, _client, ahead) = place_of(Recipe::Read, &["w1", "r2", "w3", "r4"]).await;
        let predecessor = recheck(&place).await.expect("read").expect("a writer below");
        assert_eq!(predecessor.key, ahead[2].0, "the nearest writer");
        assert!(!predecessor.going_grants_us(), "a writer below it: {predecessor:?}");
    }

    /// On a real etcd: the waiter hears its predecessor's release on the predecessor's marker,
    /// with the release's revision, so it is first with no request after the release. A marker
    /// written before the predecessor's key was created (an earlier hold under the same name)
    /// is not that release, and neither is a key deleted without the marker (a waiter leaving).
    #[tokio::test]
    async fn a_waiter_hears_its_predecessors_release_on_the_marker() {
        let (place, client, ahead) = place_behind(&["1"]).await;
        let session = &place.session;
        let mut kv = client.kv_client();
        let leaving = &ahead[0];
        let mut watch = MarkerWatch::start(session, marker_of(&place, &leaving.0));
        assert!(watch.opened().await, "the marker's watch opens");
        kv.delete(leaving.0.as_str(), None).await.expect("a waiter leaves");
        assert!(!watch.written_soon(session, leaving.1).await, "a waiter leaving writes no marker");

        let key = format!("{}3", place.queue_prefix);
        let marker = marker_of(&place, &key).expect("its marker");
        let mut watch = MarkerWatch::start(session, Some(marker.clone()));
        assert!(watch.opened().await, "the marker's watch opens");
        kv.put(marker.as_str(), "an earlier hold's release", None).await.expect("an earlier release");
        let created = kv.put(key.as_str(), "", None).await.expect("queue").header().expect("header").revision();
        assert!(!watch.written_soon(session, created).await, "an earlier hold's release is not this one's");

        let release = release_txn(&key, created, &marker, session.lease);
        let released_at = kv.txn(release).await.expect("release").header().expect("header").revision();
        let heard = tokio::time::timeout(Duration::from_secs(10), watch.written_after(session, created)).await;
        assert_eq!(heard.ok(), Some(released_at), "the release is heard, at its revision");
    }

    /// On a real etcd: a release whose key is gone already (taken by an operator or by expiry)
    /// writes no marker, and a marker goes with the lease of the session that wrote it.
    #[tokio::test]
    async fn release_markers_go_with_the_session() {
        let (place, client, _) = place_behind(&[]).await;
        let mut kv = client.kv_client();
        let marker = marker_of(&place, &place.key).expect("our marker");
        let marker_exists = |kv: &mut etcd_client::KvClient| {
            let mut kv = kv.clone();
            let marker = marker.clone();
            async move { kv.get(marker, None).await.expect("read the marker").count() == 1 }
        };
        kv.delete(place.key.as_str(), None).await.expect("an operator deletes the holder's key");
        kv.txn(release_txn(&place.key, place.revision, &marker, place.session.lease)).await.expect("release");
        assert!(!marker_exists(&mut kv).await, "a release of a key already gone writes no marker");

        let (key, lease) = (place.key.as_str(), place.session.lease);
        let revision = kv.put(key, "", Some(PutOptions::new().with_lease(lease))).await.expect("queue again");
        let revision = revision.header().expect("header").revision();
        kv.txn(release_txn(key, revision, &marker, lease)).await.expect("release");
        assert!(marker_exists(&mut kv).await, "the release wrote the marker");
        client.lease_client().revoke(lease).await.expect("end the session's lease");
        assert!(!marker_exists(&mut kv).await, "the marker went with the lease");
    }

    #[test]
    fn a_watch_is_backed_by_reads_until_etcd_has_surely_synced_it() {
        let opened = Instant::now();
        let ms = Duration::from_millis;
        let polls = |now: Instant| unsynced_polls(Some(opened), now).map(|at| at - opened).collect::<Vec<_>>();
        let every_10_ms: Vec<Duration> = (1..=10).map(|i| ms(10 * i)).collect();
        assert_eq!(polls(opened), every_10_ms, "a new watch");
        assert_eq!(polls(opened + ms(65)), every_10_ms[6..], "a kept watch opened 65 ms ago: the polls left");
        assert_eq!(polls(opened + ms(100)), [], "a kept watch opened 100 ms ago is trusted");
        assert_eq!(unsynced_polls(None, opened).count(), 0, "a long queue does not poll");
    }
}
