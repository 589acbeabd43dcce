//! The queue every recipe shares, in the key layout of etcd's Go `concurrency` package: the
//! queue of `name` is the keys under `<prefix>/<name>/`, one per session (`<lease-id hex>`),
//! ordered by create revision.
//! The holder is the lowest; each waiter watches only the key just below its own. The keys of
//! locks named below this one (`<name>/nightly`) lie under the same prefix: they are not in the
//! queue, and reads skip them.
//!
//! A holder that waited also writes its release marker (`<prefix>//released/<name>//<lease-id
//! hex>`) in the Txn that deletes its key. The waiter behind it watches that marker beside the
//! key ([`crate::release_marker`]): hearing it written after the key's creation, it knows the
//! deletion is the holder's own release, so nothing older is left and it is first, without a
//! request. A deletion heard without the marker (a waiter that left, an expired lease, a Go
//! holder) is checked with one read of the marker at the deletion's revision, and failing that
//! of the keys below ours. A hand-off then costs the server the same at 1,000 waiters as at one:
//! the release.
//!
//! A holder whose key was first from its creation writes no marker: no key can appear below it
//! later, so every waiter behind it read it as the owner, and for such a waiter the key's
//! deletion alone means it is first. An uncontended lock's release is then a plain delete
//! ([`crate::key_generations`] says why that is safe).
//!
//! This module queues ([`enqueue`]) and leaves the queue; [`wait`] waits until the recipe's
//! grant rule grants our place (the exclusive rule of the lock and the election: first in the
//! queue), and [`crate::hold`] turns a granted place into a hold.

mod permit_hand_on;
mod permits;
mod wait;

use std::num::NonZeroU32;
use std::sync::Arc;

use distlock_core::backend::{EntryRequest, Grant, Recipe};
use distlock_core::{FencingToken, LockError, LockName, QueueEntry};
use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};

use crate::layout::is_queue_key;
use crate::place::Place;
use crate::session::EtcdSession;
pub(crate) use permit_hand_on::remove_permit;
use wait::recheck;

/// What the server said after queuing or re-reading: the key just below ours.
#[derive(Debug)]
struct Predecessor {
    key: String,
    /// Its create revision: a session reuses its key name, so names alone can mislead.
    revision: i64,
    /// The revision of the read.
    read_at: i64,
    /// How many queue keys were below ours at that read; [`AHEAD_READ`] means that many or more.
    ahead: usize,
    /// Whether the grant rule grants us once this key is gone, with every other key of the read
    /// still there (see [`Predecessor::going_grants_us`]).
    settles: bool,
}

/// `options` with `limit`, if any.
fn limited(options: GetOptions, limit: Option<i64>) -> GetOptions {
    match limit {
        Some(limit) => options.with_limit(limit),
        None => options,
    }
}

/// How many of the keys below ours a queue read returns: the predecessor, whether it is the
/// owner, and whether the queue ahead is short. etcd reads every key of the queue to sort them
/// by create revision whatever the limit, so a few more cost only their bytes.
const AHEAD_READ: i64 = 8;

impl Predecessor {
    /// From the keys below ours, newest first, read with a limit of [`AHEAD_READ`] or none:
    /// the key the place's grant rule waits behind ([`Place::blocker`]: the first, for all but a
    /// reader), which is the owner if nothing read lies below it.
    fn from_below(place: &Place, below: &[&KeyValue], read_at: i64) -> Option<Self> {
        let (kv, ahead) = place.blocker(below)?;
        Some(Predecessor {
            key: kv.key_str().unwrap_or_default().to_owned(),
            revision: kv.create_revision(),
            read_at,
            ahead,
            settles: place.granted_without(below, ahead - 1),
        })
    }

    /// Whether its going alone makes us first: it was the owner at that read (nothing below
    /// it), or nothing else below ours can block us (a reader whose nearest writer has only
    /// readers below it). Keys queued later are above ours, so what is below ours can only go;
    /// a read cut by its limit leaves keys out only where a key besides this one blocks us.
    fn going_grants_us(&self) -> bool {
        self.ahead == 1 || self.settles
    }

    /// Whether so few were ahead that the predecessor's deletion may come while a new watch is
    /// still unsynced. A long queue does not read while its watches sync: a thousand waiters
    /// queuing at once would otherwise send five thousand reads in 100 ms.
    fn may_go_soon(&self) -> bool {
        (self.ahead as i64) < AHEAD_READ
    }
}

fn queue_range() -> GetOptions {
    GetOptions::new().with_prefix().with_keys_only()
}

fn kvs(response: &TxnOpResponse) -> &[KeyValue] {
    match response {
        TxnOpResponse::Get(get) => get.kvs(),
        _ => &[],
    }
}

/// The queue's keys in a read of the queue prefix, in the read's order; `None` if keys of locks
/// named below this one took some of the read's limit and the server has more: then only a read
/// without a limit tells the queue.
fn queue_keys<'r>(queue_prefix: &str, response: Option<&'r TxnOpResponse>) -> Option<Vec<&'r KeyValue>> {
    let Some(TxnOpResponse::Get(get)) = response else { return Some(Vec::new()) };
    let queue: Vec<&KeyValue> = get.kvs().iter().filter(|kv| is_queue_key(queue_prefix, kv.key())).collect();
    (queue.len() == get.kvs().len() || !get.more()).then_some(queue)
}

/// Deletes `key` if it still has `revision` (or, with no revision known, if it still belongs
/// to our lease): a retried delete can never remove a newer holder's key.
pub(crate) fn fenced_delete(key: &str, revision: Option<i64>, lease: i64) -> Txn {
    let compare = match revision {
        Some(revision) => Compare::create_revision(key, CompareOp::Equal, revision),
        None => Compare::lease(key, CompareOp::Equal, lease),
    };
    Txn::new().when([compare]).and_then([TxnOp::delete(key, None)])
}

/// Removes a waiter's key when its acquire is cancelled or fails, in the background, before the
/// same session may queue in the same queue again (with the same key, or as the other side of
/// a read-write lock): one entry per session in a queue, always.
struct KeyCleanup {
    session: Arc<EtcdSession>,
    /// The queue's prefix, by which the session's pending cleanups are kept.
    queue_prefix: String,
    key: String,
    revision: Option<i64>,
    /// A permit's number of permits: its going hands on ([`permit_hand_on`]).
    permits: Option<NonZeroU32>,
    armed: bool,
}

impl Drop for KeyCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        delete_in_background(
            &self.session,
            &self.queue_prefix,
            &self.key,
            self.revision,
            self.permits,
            "delete a cancelled waiter's key",
        );
    }
}

/// Deletes `key` (fenced by `revision` where known) in the background until the delete is
/// confirmed or the session ends; until then `session` does not queue in `queue_prefix` again.
/// A permit's key (`permits`) with a known revision goes as [`remove_permit`] says.
pub(crate) fn delete_in_background(
    session: &Arc<EtcdSession>,
    queue_prefix: &str,
    key: &str,
    revision: Option<i64>,
    permits: Option<NonZeroU32>,
    op: &'static str,
) {
    let (session_owned, key_owned, prefix_owned) = (session.clone(), key.to_owned(), queue_prefix.to_owned());
    session.cleanups.start(queue_prefix).retry_until_done(key.to_owned(), move || {
        let (session, key, queue_prefix) = (session_owned.clone(), key_owned.clone(), prefix_owned.clone());
        async move {
            match (revision, permits) {
                (Some(revision), Some(permits)) => {
                    remove_permit(&session, &queue_prefix, &key, revision, permits, op).await
                }
                _ => session.txn(op, fenced_delete(&key, revision, session.lease)).await.map(drop),
            }
        }
    });
}

/// The key `session` queues with for `name`: `<prefix>/<name>/<lease-id hex>`, with a
/// generation suffix where one of its releases there went unconfirmed
/// ([`crate::key_generations`]).
pub(crate) fn queue_key(session: &EtcdSession, name: &LockName) -> String {
    key_in(session, &session.config.lock_prefix(name.as_str()))
}

/// The key `session` queues with under `key_stem` (see [`queue_key`]).
fn key_in(session: &EtcdSession, key_stem: &str) -> String {
    crate::layout::queue_key(key_stem, session.lease, session.key_generations.current(key_stem))
}

/// A place in the queue, not yet known to be first. Dropped unconsumed, its key is removed.
pub(crate) struct Queued {
    place: Place,
    cleanup: KeyCleanup,
    owner: Option<i64>,
    predecessor: Option<Predecessor>,
    /// How many keys were ahead of a permit's at its queuing Txn, so that its wait starts
    /// without a read of its own.
    permits_ahead: Option<usize>,
}

/// Queues `session` for `name`: one Txn creates our key if absent and reads the keys just below
/// ours (the predecessor, whether it is the owner, how many are ahead). Where the session has
/// not met others lately, a cheaper Txn goes first (see [`queue_alone`]).
pub(crate) async fn enqueue(
    session: Arc<EtcdSession>,
    name: &LockName,
    request: &EntryRequest,
) -> Result<Queued, LockError> {
    let value = request.value.as_slice();
    let queue_prefix = session.config.queue_prefix(name.as_str(), request.recipe);
    let key_stem = crate::layout::key_stem(&queue_prefix, request.recipe);
    let key = key_in(&session, &key_stem);
    session.cleanups.wait(&queue_prefix, &session.life).await;
    let mut cleanup = KeyCleanup {
        session: session.clone(),
        queue_prefix: queue_prefix.clone(),
        key: key.clone(),
        revision: None,
        permits: request.recipe.permits(),
        armed: true,
    };
    let lease = session.lease;
    // A place that writes no marker; the queuing Txn's read decides whether it does.
    let place_at = |queue_prefix: String, key: String, revision: i64| Place {
        session: session.clone(),
        name: name.clone(),
        queue_prefix,
        key_stem: key_stem.clone(),
        key,
        revision,
        writes_marker: false,
        recipe: request.recipe,
    };
    // A reader reads every key below its own: its blocker may lie below any number of readers.
    let ahead_read = (request.recipe.is_exclusive()).then_some(AHEAD_READ + 1);

    if !session.contention.met_others(&queue_prefix) {
        if let Some(revision) = queue_alone(&session, &queue_prefix, &key, value).await? {
            cleanup.revision = Some(revision);
            // First from its creation: no marker to write (see the module's comment).
            let place = place_at(queue_prefix, key, revision);
            return Ok(Queued { place, cleanup, owner: Some(revision), predecessor: None, permits_ahead: None });
        }
        tracing::debug!(lock = %name, "the lock's queue was not empty: reading it");
    }

    // One Txn: create our key if absent, and read the owner and the key just below ours.
    let enqueue = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then(
            [TxnOp::put(key.as_str(), value, Some(PutOptions::new().with_lease(lease)))]
                .into_iter()
                .chain(match request.recipe {
                    Recipe::Permit(_) => permits::queue_reads(&queue_prefix),
                    // Ours and the ones just below it.
                    _ => vec![TxnOp::get(
                        queue_prefix.as_str(),
                        Some(limited(queue_range().with_sort(SortTarget::Create, SortOrder::Descend), ahead_read)),
                    )],
                })
                .collect::<Vec<_>>(),
        )
        .or_else([
            TxnOp::get(key.as_str(), Some(GetOptions::new().with_keys_only())),
            TxnOp::get(
                queue_prefix.as_str(),
                Some(queue_range().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1)),
            ),
        ]);
    let response = session.txn("queue for the lock", enqueue).await?;
    let read_at = revision_of(&response);
    let ops = response.op_responses();
    if response.succeeded() {
        // Alone if the range holds our key only, as [`queue_alone`] asks: keys of locks named
        // below this one count, so that a range they share does not make every other acquire
        // cost two Txns.
        let range_alone = match ops.get(1) {
            Some(TxnOpResponse::Get(get)) if get.count() == 1 => true,
            Some(TxnOpResponse::Get(get)) => get.kvs().len() == 1 && !get.more(),
            _ => false,
        };
        session.contention.record(&queue_prefix, range_alone);
    }
    // Our place as the Txn created it; an earlier attempt's key has its own revision, and only
    // the creation's read can tell whether we write a marker (below).
    let mut place = place_at(queue_prefix, key, read_at);
    // `read`: whether the queue below our key is known from the Txn's read.
    let mut permits_ahead = None;
    let (owner, predecessor, read) = if response.succeeded() {
        match request.recipe.permits() {
            Some(permits) => {
                let ahead = permits::ahead_at_queuing(&place, ops.get(1..).unwrap_or_default())?;
                permits_ahead = Some(ahead);
                // Granted at once within the permits.
                ((ahead < permits.get() as usize).then_some(read_at), None, true)
            }
            None => match queue_keys(&place.queue_prefix, ops.get(1)) {
                Some(queue) => {
                    let below = queue.get(1..).unwrap_or_default();
                    // Granted at once: first, or a reader with no writer below.
                    let owner = (place.decide(below).0 == Grant::Granted).then_some(read_at);
                    (owner, Predecessor::from_below(&place, below, read_at), true)
                }
                // Keys of locks named below this one filled the read: read the queue itself.
                None => (None, None, false),
            },
        }
    } else {
        // Our key exists already: an earlier attempt of this very request was applied.
        let own = ops.first().map(kvs).and_then(|k| k.first()).map(KeyValue::create_revision);
        let Some(revision) = own else {
            return Err(LockError::Backend {
                backend: "etcd",
                op: "queue for the lock".into(),
                retryable: true,
                source: "the Txn saw our key but the read found none".into(),
            });
        };
        tracing::debug!(key = %place.key, revision, "queue request was applied before: found our own key");
        place.revision = revision;
        let owner = queue_keys(&place.queue_prefix, ops.get(1)).and_then(|q| q.first().map(|kv| kv.create_revision()));
        (owner, None, true)
    };
    let revision = place.revision;
    cleanup.revision = Some(revision);
    // Only the read of our key's own creation can show it was first from then on: a retry's
    // read comes later, when keys once below ours may have gone. A reader's release says
    // nothing of who is first: it writes no marker.
    let created_first = response.succeeded() && owner == Some(read_at);
    place.writes_marker = !created_first && request.recipe.is_exclusive();
    let mut queued = Queued { place, cleanup, owner, predecessor, permits_ahead };
    if !read {
        // Keys of locks named below this one filled the read. One read of the queue tells
        // the owner and the predecessor (only a limited read, the lock's, can be filled so).
        queued.predecessor = recheck(&queued.place).await?;
        if queued.predecessor.is_none() {
            queued.owner = Some(revision);
        }
    }
    Ok(queued)
}

/// Creates our key only if the lock's whole key range is empty (and our key absent): one Txn of
/// two compares and a put, cheaper for the server than the queuing Txn's read.
/// `Some(revision)`: our key, created first in the queue, so first from its creation.
/// `None`: nothing written (others are queued, a lock named below this one has keys in the
/// range, or an earlier attempt of this very request created our key): the caller queues with
/// the read.
async fn queue_alone(
    session: &EtcdSession,
    queue_prefix: &str,
    key: &str,
    value: &[u8],
) -> Result<Option<i64>, LockError> {
    // Over the range, ours included: every key in it has create revision 0, so none exists.
    let txn = Txn::new()
        .when([Compare::create_revision(queue_prefix, CompareOp::Equal, 0).with_range(range_end(queue_prefix))])
        .and_then([TxnOp::put(key, value, Some(PutOptions::new().with_lease(session.lease)))]);
    let response = session.txn("queue for the lock", txn).await?;
    Ok(response.succeeded().then(|| revision_of(&response)))
}

/// The end of the key range of every key starting with `prefix` (what etcd's `WithPrefix` sends):
/// the prefix with its last byte below 0xff incremented and what follows it dropped; all 0xff
/// (or empty): `\0`, the end of the keyspace.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Queued {
    /// Our key as `inspect` lists it.
    pub(crate) fn entry(&self) -> QueueEntry {
        QueueEntry {
            owner: self.place.key.clone(),
            token: FencingToken::new(self.place.revision as u64),
            since: None,
            kind: self.place.recipe.entry_kind(),
        }
    }

    fn is_first(&self) -> bool {
        self.owner == Some(self.place.revision)
    }

    /// The place if it is first; else leaves the queue (deleting the key) and returns `None`.
    pub(crate) async fn first_or_leave(mut self) -> Result<Option<Place>, LockError> {
        if self.is_first() {
            self.cleanup.armed = false;
            return Ok(Some(self.place));
        }
        let place = &self.place;
        match self.cleanup.permits {
            // Admitted since the queuing read, perhaps: what our going frees is handed on.
            Some(permits) => {
                let session = &place.session;
                remove_permit(session, &place.queue_prefix, &place.key, place.revision, permits, "leave the queue")
                    .await?;
            }
            None => {
                let txn = fenced_delete(&place.key, Some(place.revision), place.session.lease);
                place.session.txn("leave the queue", txn).await?;
            }
        }
        self.cleanup.armed = false;
        Ok(None)
    }
}

/// The revision a Txn was answered at (0 if the server left the header out).
pub(super) fn revision_of(response: &etcd_client::TxnResponse) -> i64 {
    response.header().map(|h| h.revision()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::place::testing::place_behind;

    #[test]
    fn the_range_of_a_prefix_ends_past_its_last_key() {
        assert_eq!(range_end("distlock/jobs/"), b"distlock/jobs0");
        assert_eq!(range_end("a"), b"b");
        // Prefix strings are UTF-8: a multi-byte last character has no 0xff byte.
        assert_eq!(range_end("é"), [0xc3, 0xaa]);
        assert_eq!(range_end(""), [0], "no prefix: the end of the keyspace");
    }

    /// On a real etcd: where the session found the queue empty, queuing asks with the cheaper
    /// Txn, which writes nothing unless the lock's whole range is empty. A key anywhere in the
    /// range (another holder, a lock named below this one) or our own key from an earlier

    #[tokio::test]
    async fn queuing_alone_writes_only_into_an_empty_range() {
        let (place, client, _) = place_behind(&[]).await;
        let mut kv = client.kv_client();
        let session = &place.session;
        let fresh = format!("{}fresh", place.queue_prefix);
        assert_eq!(
            queue_alone(session, &place.queue_prefix, &fresh, b"").await.expect("queue"),
            None,
            "another key is in the range"
        );
        kv.delete(place.key.as_str(), None).await.expect("empty the queue");
        let nested = format!("{}nightly/1", place.queue_prefix);
        kv.put(nested.as_str(), "", None).await.expect("a lock named below this one");
        assert_eq!(
            queue_alone(session, &place.queue_prefix, &place.key, b"").await.expect("queue"),
            None,
            "a nested lock's key"
        );
        kv.delete(nested.as_str(), None).await.expect("the nested lock is free");
        let created =
            queue_alone(session, &place.queue_prefix, &place.key, b"").await.expect("queue").expect("created");
        let ours = kv.get(place.key.as_str(), None).await.expect("read our key");
        let ours = ours.kvs().first().expect("our key");
        assert_eq!(
            (ours.create_revision(), ours.lease()),
            (created, session.lease),
            "created at that revision, on our lease"
        );
        assert_eq!(
            queue_alone(session, &place.queue_prefix, &place.key, b"").await.expect("queue"),
            None,
            "a retry writes nothing"
        );
    }
}
