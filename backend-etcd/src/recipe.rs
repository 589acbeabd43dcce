//! The lock recipe, in etcd's Go `concurrency.Mutex` key layout: the queue of lock `name` is the
//! keys under `<prefix>/<name>/`, one per session (`<lease-id hex>`), ordered by create revision.
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
//! deletion alone means it is first. An uncontended lock's release is then the fenced delete.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distlock_core::{
    backend::{EntryRequest, LossSignal, Recipe, ServerHold, ServerProclaim, ServerRelease},
    FencingToken, LockError, LockName, LossReason, QueueEntry,
};
use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::layout::is_queue_key;
use crate::release_marker::{marker_of, MarkerWatch};
use crate::session::EtcdSession;
use crate::watch::{wait_for_delete, KeyWatch, WaitEnd, Watched};

/// How long a hold lasts before its own key gets a deletion watch. Short holds (most of them)
/// then cost two requests; the watch starts from the key's create revision, so a deletion
/// before it was created is still seen.
const OWN_KEY_WATCH_GRACE: Duration = Duration::from_millis(200);

/// A session's place in one lock's queue.
#[derive(Debug)]
pub(crate) struct Place {
    pub(crate) session: Arc<EtcdSession>,
    pub(crate) name: LockName,
    pub(crate) queue_prefix: String,
    pub(crate) key: String,
    pub(crate) revision: i64,
    /// Whether our release must write our release marker ([`marker_of`] our key): not when our
    /// key was first from its creation (see the module's comment).
    pub(crate) writes_marker: bool,
    /// The recipe the key was queued for: an election's hold can proclaim.
    pub(crate) recipe: Recipe,
}

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
}

/// How many of the keys below ours a queue read returns: the predecessor, whether it is the
/// owner, and whether the queue ahead is short. etcd reads every key of the queue to sort them
/// by create revision whatever the limit, so a few more cost only their bytes.
const AHEAD_READ: i64 = 8;

impl Predecessor {
    /// From the keys below ours, newest first, read with a limit of [`AHEAD_READ`] or none: the
    /// first is the predecessor, and it is the owner if it is alone.
    fn from_below(below: &[&KeyValue], read_at: i64) -> Option<Self> {
        let kv = below.first()?;
        Some(Predecessor {
            key: kv.key_str().unwrap_or_default().to_owned(),
            revision: kv.create_revision(),
            read_at,
            ahead: below.len(),
        })
    }

    /// It was the owner at that read: nothing was below it, so once it is gone we are first.
    fn was_owner(&self) -> bool {
        self.ahead == 1
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
fn fenced_delete(key: &str, revision: Option<i64>, lease: i64) -> Txn {
    let compare = match revision {
        Some(revision) => Compare::create_revision(key, CompareOp::Equal, revision),
        None => Compare::lease(key, CompareOp::Equal, lease),
    };
    Txn::new().when([compare]).and_then([TxnOp::delete(key, None)])
}

/// Removes a waiter's key when its acquire is cancelled or fails, in the background, before the
/// same session may queue for the same key again.
struct KeyCleanup {
    session: Arc<EtcdSession>,
    key: String,
    revision: Option<i64>,
    armed: bool,
}

impl Drop for KeyCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (session, key, revision) = (self.session.clone(), self.key.clone(), self.revision);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let cleanup = session.cleanups.start(&key);
        runtime.spawn(async move {
            // Retry until it is confirmed or the session is gone (then the key is gone too).
            loop {
                let txn = fenced_delete(&key, revision, session.lease);
                match session.txn("delete a cancelled waiter's key", txn).await {
                    Ok(_) | Err(LockError::SessionExpired { .. }) => break,
                    Err(error) if error.is_retryable() => continue,
                    Err(error) => {
                        tracing::warn!(%key, %error, "could not delete a cancelled waiter's key; the lease's expiry will");
                        break;
                    }
                }
            }
            tracing::debug!(%key, "cancelled waiter's key deleted");
            cleanup.finish();
        });
    }
}

/// The key `session` queues with for `name`: `<prefix>/<name>/<lease-id hex>`.
pub(crate) fn queue_key(session: &EtcdSession, name: &LockName) -> String {
    crate::layout::queue_key(&session.config.lock_prefix(name.as_str()), session.lease)
}

/// A place in the queue, not yet known to be first. Dropped unconsumed, its key is removed.
pub(crate) struct Queued {
    place: Place,
    cleanup: KeyCleanup,
    owner: Option<i64>,
    predecessor: Option<Predecessor>,
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
    let queue_prefix = session.config.lock_prefix(name.as_str());
    let key = queue_key(&session, name);
    session.cleanups.wait(&key, &session.life).await;
    let mut cleanup = KeyCleanup { session: session.clone(), key: key.clone(), revision: None, armed: true };
    let lease = session.lease;

    if !session.contention.met_others(&queue_prefix) {
        if let Some(revision) = queue_alone(&session, &queue_prefix, &key, value).await? {
            cleanup.revision = Some(revision);
            // First from its creation: no marker to write (see the module's comment).
            let place = Place {
                session: session.clone(),
                name: name.clone(),
                queue_prefix,
                key,
                revision,
                writes_marker: false,
                recipe: request.recipe,
            };
            return Ok(Queued { place, cleanup, owner: Some(revision), predecessor: None });
        }
        tracing::debug!(lock = %name, "the lock's queue was not empty: reading it");
    }

    // One Txn: create our key if absent, and read the owner and the key just below ours.
    let enqueue = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key.as_str(), value, Some(PutOptions::new().with_lease(lease))),
            // Ours and the ones just below it.
            TxnOp::get(
                queue_prefix.as_str(),
                Some(queue_range().with_sort(SortTarget::Create, SortOrder::Descend).with_limit(AHEAD_READ + 1)),
            ),
        ])
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
        let range_alone = matches!(ops.get(1), Some(TxnOpResponse::Get(get)) if get.kvs().len() == 1 && !get.more());
        session.contention.record(&queue_prefix, range_alone);
    }
    let (revision, owner, predecessor) = if response.succeeded() {
        match queue_keys(&queue_prefix, ops.get(1)) {
            Some(queue) => {
                let below = queue.get(1..).unwrap_or_default();
                let owner = if below.is_empty() { Some(read_at) } else { None };
                (read_at, owner, Predecessor::from_below(below, read_at))
            }
            // Keys of locks named below this one filled the read: read the queue itself.
            None => (read_at, None, None),
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
        tracing::debug!(%key, revision, "queue request was applied before: found our own key");
        let owner = queue_keys(&queue_prefix, ops.get(1)).and_then(|q| q.first().map(|kv| kv.create_revision()));
        (revision, owner, None)
    };
    cleanup.revision = Some(revision);
    // Only the read of our key's own creation can show it was first from then on: a retry's
    // read comes later, when keys once below ours may have gone.
    let created_first = response.succeeded() && owner == Some(read_at);
    let place = Place {
        session: session.clone(),
        name: name.clone(),
        queue_prefix,
        key,
        revision,
        writes_marker: !created_first,
        recipe: request.recipe,
    };
    let mut queued = Queued { place, cleanup, owner, predecessor };
    if queued.owner.is_none() && queued.predecessor.is_none() {
        // Neither known: keys of locks named below this one filled the read. One read of the
        // queue tells both.
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
    let txn = Txn::new()
        .when([
            Compare::create_revision(key, CompareOp::Equal, 0),
            // Over a range: every key in it has create revision 0, so none exists.
            Compare::create_revision(queue_prefix, CompareOp::Equal, 0).with_range(range_end(queue_prefix)),
        ])
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
        QueueEntry { owner: self.place.key.clone(), token: FencingToken::new(self.place.revision as u64), since: None }
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
        let txn = fenced_delete(&place.key, Some(place.revision), place.session.lease);
        place.session.txn("leave the queue", txn).await?;
        self.cleanup.armed = false;
        Ok(None)
    }

    /// Waits until first: watches only the key just below ours, with a watch the session kept
    /// from an earlier wait on the same key, or a new one "from now" (see [`crate::watch`]). If
    /// the server moved on between our read and a new watch's start, one read covers that gap. Once the predecessor is gone we are first if it
    /// was the owner when we read (and our lease is surely alive); otherwise one read finds the
    /// key now below ours.
    pub(crate) async fn wait_until_first(mut self) -> Result<Place, LockError> {
        if !self.is_first() {
            let place = &self.place;
            let session = &place.session;
            let during = || format!("waiting for lock {:?}", place.name.as_str());
            let mut predecessor = match self.predecessor.take() {
                Some(p) => Some(p),
                None => recheck(place).await?,
            };
            'wait: while let Some(mut p) = predecessor {
                tracing::debug!(lock = %place.name, token = place.revision, key = %place.key, predecessor = %p.key, predecessor_revision = p.revision, read_at = p.read_at, was_owner = p.was_owner(), "waiting for the predecessor's key to go");
                // The release marker's watch unless the predecessor owns the lock (then its
                // deletion alone makes us first); it opens while the key's watch does.
                let marker = if p.was_owner() { None } else { marker_of(place, &p.key) };
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
                    Some(WaitEnd::Happened { .. }) if !p.was_owner() && lease_surely_alive => {
                        marker_watch.written_soon(session, p.revision).await
                    }
                    Some(_) => false,
                };
                keep(watch, marker_watch);
                predecessor = match outcome {
                    None | Some(WaitEnd::Happened { .. }) if (p.was_owner() || released) && lease_surely_alive => break,
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
async fn recheck(place: &Place) -> Result<Option<Predecessor>, LockError> {
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
async fn read_place(place: &Place, op: &str, limit: Option<i64>) -> Result<(i64, etcd_client::TxnResponse), LockError> {
    let response = place.session.txn(op, place_read(place, limit)).await?;
    if !response.succeeded() {
        return Err(place_gone(place).await);
    }
    Ok((revision_of(&response), response))
}

/// The revision a Txn was answered at (0 if the server left the header out).
fn revision_of(response: &etcd_client::TxnResponse) -> i64 {
    response.header().map(|h| h.revision()).unwrap_or_default()
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

/// The keys just below ours, newest first: `limit` of them, or all.
fn queue_below(place: &Place, limit: Option<i64>) -> GetOptions {
    let below =
        queue_range().with_max_create_revision(place.revision - 1).with_sort(SortTarget::Create, SortOrder::Descend);
    match limit {
        Some(limit) => below.with_limit(limit),
        None => below,
    }
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
    Some(Predecessor::from_below(&below, read_at))
}

/// Turns the first place in the queue into a hold: a loss signal registered with the session,
/// a watch on our own key (after a grace period), and the fenced release.
pub(crate) fn grant(place: Place) -> ServerHold {
    let token = FencingToken::new(place.revision as u64);
    let loss = LossSignal::new(place.name.clone(), token);
    let registration = place.session.life.holds().register(loss.clone());
    if place.session.life.is_ended() {
        loss.fire(LossReason::SessionExpired);
    }
    let released = CancellationToken::new();
    let marker = if place.writes_marker { marker_of(&place, &place.key) } else { None };
    tokio::spawn(watch_own_key(
        place.session.clone(),
        place.key.clone(),
        place.revision,
        loss.clone(),
        released.clone(),
    ));
    let proclaim = (place.recipe == Recipe::Election).then(|| {
        Arc::new(EtcdProclaim { session: place.session.clone(), key: place.key.clone(), revision: place.revision })
            as Arc<dyn ServerProclaim>
    });
    ServerHold {
        token,
        loss,
        proclaim,
        release: Box::new(EtcdRelease {
            session: place.session,
            key: place.key,
            revision: place.revision,
            marker,
            registration,
            released,
        }),
    }
}

/// Fires the loss signal if our key is deleted by anyone but our own release.
async fn watch_own_key(
    session: Arc<EtcdSession>,
    key: String,
    revision: i64,
    loss: LossSignal,
    released: CancellationToken,
) {
    let watch = async {
        tokio::time::sleep(OWN_KEY_WATCH_GRACE).await;
        let mut from = revision + 1;
        loop {
            match wait_for_delete(&session, &key, from).await {
                WaitEnd::Happened { .. } => return,
                WaitEnd::Compacted => {
                    // The history is gone: look at the key itself, then watch from now on.
                    let read = session.request("read own key", &session.kv, |mut c| {
                        let key = key.clone();
                        async move { c.get(key, Some(GetOptions::new().with_keys_only())).await }
                    });
                    // Boxed, as below: a rare path, whose large future would otherwise be part of
                    // every held lock's task (10,000 held locks, 10,000 tasks).
                    match Box::pin(read).await {
                        Ok(r) if r.kvs().first().map(KeyValue::create_revision) == Some(revision) => {
                            from = r.header().map(|h| h.revision() + 1).unwrap_or(from);
                        }
                        Ok(_) => return,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = released.cancelled() => {}
        _ = loss.fired() => {}
        _ = session.life.ended() => {}
        () = watch => {
            if released.is_cancelled() {
                return;
            }
            // Deleted by the lease's expiry, or by someone else?
            if Box::pin(session.lease_alive()).await {
                loss.fire(LossReason::EntryDeleted);
            } else {
                session.life.expire();
            }
        }
    }
}

/// Replaces a leader's value: Go's `Election.Proclaim`, a put on our key under our lease, only
/// while the key still has our create revision.
#[derive(Debug)]
struct EtcdProclaim {
    session: Arc<EtcdSession>,
    key: String,
    revision: i64,
}

#[async_trait]
impl ServerProclaim for EtcdProclaim {
    async fn proclaim(&self, value: &[u8]) -> Result<(), LockError> {
        let session = &self.session;
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.revision)])
            .and_then([TxnOp::put(self.key.as_str(), value, Some(PutOptions::new().with_lease(session.lease)))]);
        let lost =
            |reason| LockError::Lost { name: self.key.clone(), token: FencingToken::new(self.revision as u64), reason };
        match session.txn("proclaim a new value", txn).await {
            Ok(response) if response.succeeded() => Ok(()),
            Ok(_) => Err(lost(LossReason::EntryDeleted)),
            Err(LockError::SessionExpired { .. }) => Err(lost(LossReason::SessionExpired)),
            Err(error) => Err(error),
        }
    }
}

/// Deletes the holder's key, fenced by its create revision, and writes the release marker (if
/// the holder has one to write) in the same Txn.
struct EtcdRelease {
    session: Arc<EtcdSession>,
    key: String,
    revision: i64,
    marker: Option<String>,
    registration: u64,
    released: CancellationToken,
}

/// Notes that the server refused us the release markers: from now on the session does without.
fn markers_refused(session: &EtcdSession, reason: &str) {
    let prefix = session.config.release_marker_prefix();
    session.markers.refuse("etcd", &prefix, reason, "grant the role read and write on that prefix to restore them");
}

/// The holder's release: if our key still has our revision, delete it and write the release
/// marker (naming the key, on our lease) at the same revision. Only a holder's release writes
/// the marker: a waiter that leaves, or an expired lease, deletes the key alone.
fn release_txn(key: &str, revision: i64, marker: &str, lease: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, revision)])
        .and_then([TxnOp::delete(key, None), TxnOp::put(marker, key, Some(PutOptions::new().with_lease(lease)))])
}

#[async_trait]
impl ServerRelease for EtcdRelease {
    async fn release(self: Box<Self>) -> Result<(), LockError> {
        self.released.cancel();
        self.session.life.holds().remove(self.registration);
        let session = &self.session;
        let fenced_delete = || fenced_delete(&self.key, Some(self.revision), session.lease);
        let released = match self.marker.as_deref().filter(|_| session.markers.allowed()) {
            None => session.txn("release the lock", fenced_delete()).await,
            Some(marker) => match session
                .txn("release the lock", release_txn(&self.key, self.revision, marker, session.lease))
                .await
            {
                Err(LockError::Unauthorized { reason, .. }) => {
                    markers_refused(session, &reason);
                    session.txn("release the lock", fenced_delete()).await
                }
                other => other,
            },
        };
        match released {
            Ok(_) => Ok(()),
            // The session is gone, and with it the key.
            Err(LockError::SessionExpired { .. }) => Ok(()),
            Err(error) => Err(LockError::ReleaseUnconfirmed {
                name: self.key.clone(),
                token: FencingToken::new(self.revision as u64),
                backstop: self.session.config.ttl,
                source: Some(Box::new(error)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A place in a fresh queue on the tests' shared etcd, behind `ahead` keys written by a
    /// plain client, each with its create revision.
    async fn place_behind(ahead: &[&str]) -> (Place, etcd_client::Client, Vec<(String, i64)>) {
        let (session, client) = crate::session::shared_test_session().await;
        let name = LockName::new(&format!("marker-{:x}/job", session.lease)).expect("name");
        let queue_prefix = session.config.lock_prefix(name.as_str());
        let kv = client.kv_client();
        let put = |key: String, options: Option<PutOptions>| {
            let mut kv = kv.clone();
            async move {
                let revision =
                    kv.put(key.as_str(), "", options).await.expect("put").header().expect("header").revision();
                (key, revision)
            }
        };
        let mut keys = Vec::new();
        for key in ahead {
            keys.push(put(format!("{queue_prefix}{key}"), None).await);
        }
        let own_key = format!("{queue_prefix}{:x}", session.lease);
        let (key, revision) = put(own_key, Some(PutOptions::new().with_lease(session.lease))).await;
        (Place { session, name, queue_prefix, key, revision, writes_marker: true, recipe: Recipe::Lock }, client, keys)
    }

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
                assert!(p.was_owner(), "{p:?}");
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
    /// attempt leaves it unapplied.
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
