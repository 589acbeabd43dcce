//! Waiting for one key's deletion (or, for a release marker, its next write) with a watch that
//! misses nothing.
//!
//! Two ways to start, because etcd serves them very differently. A watch from a past revision
//! goes into etcd's "unsynced" group, which a background loop catches up only every 100 ms
//! (`mvcc/watchable_store.go`): fine for rare waits (our own key's deletion), ruinous for a
//! hand-off. A watch "from now" is usually synced at once and hears a delete as soon as it is
//! applied; [`KeyWatch::open`] makes one and reports the revision it starts after, so the
//! caller knows which gap (its read → the watch's start) it must check. Even a watch from now
//! lands in the unsynced group when a write races its creation, so a session keeps its watches
//! after use ([`WatchCache`]) and the next wait on the same key reuses one that is synced by
//! then, unless it was opened less than 100 ms ago ([`KeyWatch::opened_at`]). Either
//! way, a broken stream (server restart, leader change) is re-created from the first revision not
//! yet covered, and a compacted start revision is reported so the caller can re-read the state.

use std::time::Duration;

use etcd_client::{EventType, WatchFilterType, WatchOptions};
use tokio::time::Instant;

use crate::session::EtcdSession;
use crate::watch_hub::HubWatch;

/// How a wait for a key's event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitEnd {
    /// The key was deleted (or written, for a watch on writes) at this revision.
    Happened { revision: i64 },
    /// The history since the start revision was compacted: read the current state instead.
    Compacted,
}

/// Which of a key's events a watch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    /// Its deletions (a queue key).
    Deletions,
    /// Its writes (a release marker).
    Writes,
}

impl Watched {
    fn event_type(self) -> EventType {
        match self {
            Watched::Deletions => EventType::Delete,
            Watched::Writes => EventType::Put,
        }
    }

    /// The server-side filter that drops the other kind of event.
    fn options(self) -> WatchOptions {
        let filter = match self {
            Watched::Deletions => WatchFilterType::NoPut,
            Watched::Writes => WatchFilterType::NoDelete,
        };
        WatchOptions::new().with_filters([filter])
    }
}

/// A watch on one key's deletions (or writes), created "from now". Once used it can be kept
/// (see [`WatchCache`]): the next wait on the same key costs no request, and a kept watch
/// opened more than etcd's 100 ms catch-up period ago is surely synced.
pub(crate) struct KeyWatch {
    key: String,
    watched: Watched,
    stream: Option<HubWatch>,
    /// The revision the server was at when it confirmed the watch: events after it are heard.
    created_at: i64,
    /// When the server confirmed it: until etcd's catch-up loop has run once since, the watch
    /// may sit in the unsynced group (a write raced its creation) and hear late.
    opened_at: Instant,
}

impl KeyWatch {
    /// Creates the watch and waits for the server's confirmation. Retries failures forever; the
    /// caller bounds the wait (session end, cancellation). Once it returns, every event of
    /// `key` after [`KeyWatch::created_at`] is heard.
    ///
    /// Cancel safe: dropping the future closes the watch.
    pub(crate) async fn open(session: &EtcdSession, key: &str, watched: Watched) -> KeyWatch {
        loop {
            if let Some(opened) = open_retrying(session, key, watched.options(), None).await {
                return Self::opened(key, watched, opened);
            }
        }
    }

    /// One attempt of [`KeyWatch::open`]: `None` if the server refused or cancelled the watch
    /// (a key the role may not read) or the stream failed.
    ///
    /// Cancel safe: dropping the future closes the watch.
    pub(crate) async fn try_open(session: &EtcdSession, key: &str, watched: Watched) -> Option<KeyWatch> {
        open_confirmed(session, key, watched.options()).await.map(|opened| Self::opened(key, watched, opened))
    }

    /// The watch of `key` that [`open_confirmed`] opened.
    fn opened(key: &str, watched: Watched, (stream, created_at): (HubWatch, i64)) -> KeyWatch {
        KeyWatch { key: key.to_owned(), watched, stream: Some(stream), created_at, opened_at: Instant::now() }
    }

    /// The revision the watch starts after.
    pub(crate) fn created_at(&self) -> i64 {
        self.created_at
    }

    /// When the server confirmed the watch (see the queue's polls of unsynced watches).
    pub(crate) fn opened_at(&self) -> Instant {
        self.opened_at
    }

    /// Whether the stream still works (a broken one is not worth keeping).
    pub(crate) fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Waits for an event of the watched kind after `revision` (for a queue key: the deletion
    /// of its entry created at `revision`; older deletions, of entries the same session had
    /// under the same name before, are skipped). A broken stream is replaced by a watch from
    /// the first revision not yet covered, so nothing is missed.
    ///
    /// Cancel safe: dropping the future loses nothing that matters; the watch stays open.
    pub(crate) async fn event_after(&mut self, session: &EtcdSession, revision: i64) -> WaitEnd {
        if let Some(stream) = self.stream.as_mut() {
            while let Some(response) = stream.message().await {
                if response.compact_revision() > 0 {
                    self.stream = None;
                    return WaitEnd::Compacted;
                }
                if let Some(at) = event_after(&response, self.watched, revision) {
                    return WaitEnd::Happened { revision: at };
                }
                if response.canceled() {
                    break;
                }
            }
            self.stream = None;
        }
        tracing::debug!(key = %self.key, "etcd watch broken; re-creating it from where it stood");
        wait_for_event(session, &self.key, self.watched, self.created_at.max(revision) + 1).await
    }
}

/// The watches a session keeps after use, at most one per group of keys (one lock's queue keys,
/// or one lock's release markers): a waiter whose predecessor is the same session as last time
/// (the steady state of clients taking turns) reuses synced watches on its key and its marker.
/// Only one per group, because a kept watch hears every event of its key: a session keeping one
/// for each key it ever waited behind would, once the queue's order shuffles, be told of nearly
/// every release (a herd of notifications). Bounded across groups: the oldest is closed when it
/// is full.
#[derive(Default)]
pub(crate) struct WatchCache {
    watches: std::sync::Mutex<std::collections::VecDeque<KeyWatch>>,
}

/// How many watches a session keeps (a key's and a marker's for each of 32 locks).
const KEPT_WATCHES: usize = 64;

/// The group a key belongs to: its lock's queue, `<prefix>/<name>/` of
/// `<prefix>/<name>/<lease hex>`, or its lock's markers, `<prefix>//released/<name>//` of
/// `<prefix>//released/<name>//<lease hex>`.
fn queue_of(key: &str) -> &str {
    key.rfind('/').map_or("", |slash| &key[..=slash])
}

impl WatchCache {
    /// Takes the kept watch on `key`, if any (it is the caller's until given back). A watch kept
    /// for another key of the same group is closed: the caller is about to watch a new
    /// predecessor there.
    pub(crate) fn take(&self, key: &str) -> Option<KeyWatch> {
        let kept = {
            let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
            let at = watches.iter().position(|w| queue_of(&w.key) == queue_of(key))?;
            watches.remove(at)?
        };
        // Not the key: dropped here, outside the lock, which closes the watch.
        (kept.key == key).then_some(kept)
    }

    /// Keeps `watch` for the next wait on its key, in place of any other kept in its group.
    pub(crate) fn give_back(&self, watch: KeyWatch) {
        if !watch.is_open() {
            return;
        }
        let mut closed = Vec::new();
        {
            let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
            // At most one per group is ever kept, so at most one is replaced.
            if let Some(at) = watches.iter().position(|w| queue_of(&w.key) == queue_of(&watch.key)) {
                closed.extend(watches.remove(at));
            }
            if watches.len() >= KEPT_WATCHES {
                closed.extend(watches.pop_front());
            }
            watches.push_back(watch);
        }
        // Dropped outside the lock: that closes them.
        drop(closed);
    }

    /// The keys of the kept watches, oldest first.
    #[cfg(test)]
    fn keys(&self) -> Vec<String> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|w| w.key.clone()).collect()
    }
}

/// The revision of the first event of the `watched` kind in `response` that is later than
/// `after`. One response can carry several events (a watcher catching up from etcd's unsynced
/// group gets them in one batch), so every event is looked at, not just the first.
fn event_after(response: &etcd_client::WatchResponse, watched: Watched, after: i64) -> Option<i64> {
    first_after(
        response.events().iter().map(|e| (e.event_type(), e.kv().map(|kv| kv.mod_revision()).unwrap_or_default())),
        watched.event_type(),
        after,
    )
}

/// [`event_after`] over (event type, revision) pairs. An event whose revision the server left
/// out (0) counts as later than `after`: it can only be one the watch was asked for.
fn first_after(events: impl IntoIterator<Item = (EventType, i64)>, kind: EventType, after: i64) -> Option<i64> {
    events
        .into_iter()
        .filter(|&(k, _)| k == kind)
        .map(|(_, revision)| if revision > 0 { revision } else { after + 1 })
        .find(|&revision| revision > after)
}

/// Opens a watch on `key` with `options` "from now" and waits for the server's confirmation:
/// the watch and the revision it starts after (every later event of `key` reaches it); `None`
/// if the server refused or cancelled it (a key the role may not read) or the stream failed.
///
/// Cancel safe: dropping the future closes the watch.
pub(crate) async fn open_confirmed(session: &EtcdSession, key: &str, options: WatchOptions) -> Option<(HubWatch, i64)> {
    session.count();
    match session.hub.watch(key, options).await {
        Ok(mut stream) => match stream.message().await {
            Some(created) if created.created() && !created.canceled() => {
                Some((stream, created.header().map(|h| h.revision()).unwrap_or_default()))
            }
            other => {
                tracing::debug!(key, ?other, "etcd watch not confirmed");
                None
            }
        },
        Err(error) => {
            tracing::debug!(key, %error, "etcd watch could not be created");
            None
        }
    }
}

/// The pauses between tries to open a watch: 20 ms at first, doubling up to 500 ms.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(20);
    const LONGEST: Duration = Duration::from_millis(500);

    pub(crate) fn new() -> Backoff {
        Backoff(Self::FIRST)
    }

    /// Back to the first pause (a watch worked for a while).
    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// The next pause; the one after it is twice as long.
    pub(crate) fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (pause * 2).min(Self::LONGEST);
        pause
    }
}

/// Opens a watch ([`open_confirmed`]), trying again after each failure (a member down: the next
/// try may go to another) with [`Backoff`]'s pauses, until one is confirmed; with a `deadline`,
/// `None` once it has passed (a watch the server refuses, as etcd does one on a key the role
/// may not read, fails every try).
///
/// Cancel safe: dropping the future closes the watch.
pub(crate) async fn open_retrying(
    session: &EtcdSession,
    key: &str,
    options: WatchOptions,
    deadline: Option<Instant>,
) -> Option<(HubWatch, i64)> {
    let mut backoff = Backoff::new();
    loop {
        let attempt = open_confirmed(session, key, options.clone());
        let opened = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, attempt).await.ok().flatten(),
            None => attempt.await,
        };
        if opened.is_some() {
            return opened;
        }
        let pause = backoff.next();
        if deadline.is_some_and(|deadline| Instant::now() + pause >= deadline) {
            return None;
        }
        tokio::time::sleep(pause).await;
    }
}

/// Waits until `key` is deleted at a revision `>= from_revision`: [`wait_for_event`].
pub(crate) async fn wait_for_delete(session: &EtcdSession, key: &str, from_revision: i64) -> WaitEnd {
    wait_for_event(session, key, Watched::Deletions, from_revision).await
}

/// Waits until `key` has an event of the `watched` kind at a revision `>= from_revision`.
/// Retries broken watches forever ([`Backoff`]); the caller bounds the wait (session end,
/// cancellation).
///
/// Cancel safe: dropping the future closes the watch.
async fn wait_for_event(session: &EtcdSession, key: &str, watched: Watched, from_revision: i64) -> WaitEnd {
    let mut backoff = Backoff::new();
    loop {
        session.count();
        let options = watched.options().with_start_revision(from_revision);
        match session.hub.watch(key, options).await {
            Ok(mut stream) => {
                while let Some(response) = stream.message().await {
                    if response.compact_revision() > 0 {
                        return WaitEnd::Compacted;
                    }
                    if let Some(revision) = event_after(&response, watched, from_revision - 1) {
                        return WaitEnd::Happened { revision };
                    }
                    if response.canceled() {
                        break;
                    }
                    backoff.reset();
                }
            }
            Err(error) => tracing::debug!(key, %error, "etcd watch could not be created; retrying"),
        }
        tracing::debug!(key, from_revision, "etcd watch broken; re-creating it from the same revision");
        tokio::time::sleep(backoff.next()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_with_an_older_deletion_first_still_yields_the_awaited_one() {
        // A kept watch catching up in one batch: the deletion of the entry the same session had
        // under this key before (13), a put, then the deletion being waited for (29). Taking only
        // the first deletion and finding it too old used to drop the whole batch: a hang.
        let batch = [(EventType::Delete, 13), (EventType::Put, 14), (EventType::Delete, 29)];
        assert_eq!(first_after(batch, EventType::Delete, 14), Some(29));
    }

    #[test]
    fn only_deletions_after_the_revision_count() {
        assert_eq!(first_after([(EventType::Delete, 13)], EventType::Delete, 14), None);
        assert_eq!(first_after([(EventType::Put, 20)], EventType::Delete, 14), None);
        assert_eq!(first_after([(EventType::Delete, 15), (EventType::Delete, 16)], EventType::Delete, 14), Some(15));
        assert_eq!(first_after(std::iter::empty(), EventType::Delete, 14), None);
        // A release marker's watch waits for writes, and skips deletions.
        assert_eq!(first_after([(EventType::Delete, 15), (EventType::Put, 16)], EventType::Put, 14), Some(16));
        assert_eq!(first_after([(EventType::Put, 14)], EventType::Put, 14), None);
    }

    /// On a real etcd: a watch catching up from a past revision gets the key's two deletions,
    /// the one before the awaited entry's creation and the awaited one, in one response. The
    /// wait must end with the second (it hung when only the first deletion was looked at).
    #[tokio::test]
    async fn a_real_catch_up_batch_with_an_older_deletion_first_ends_the_wait() {
        let (session, client) = crate::session::shared_test_session().await;
        let mut kv = client.kv_client();
        let key = format!("watch-batch-{}", session.lease);
        let first =
            kv.put(key.as_str(), "", None).await.expect("put").header().map(|h| h.revision()).unwrap_or_default();
        kv.delete(key.as_str(), None).await.expect("delete the older entry");
        let created =
            kv.put(key.as_str(), "", None).await.expect("put").header().map(|h| h.revision()).unwrap_or_default();
        let deleted =
            kv.delete(key.as_str(), None).await.expect("delete").header().map(|h| h.revision()).unwrap_or_default();

        let mut watch = KeyWatch {
            key: key.clone(),
            watched: Watched::Deletions,
            stream: None,
            created_at: first,
            opened_at: Instant::now(),
        };
        let options = WatchOptions::new().with_start_revision(first).with_filters([WatchFilterType::NoPut]);
        let mut stream = session.hub.watch(&key, options).await.expect("watch");
        let confirmed = stream.message().await.expect("the watch's creation");
        assert!(confirmed.created(), "{confirmed:?}");
        watch.stream = Some(stream);
        let ended = tokio::time::timeout(Duration::from_secs(10), watch.event_after(&session, created)).await;
        assert_eq!(ended.ok(), Some(WaitEnd::Happened { revision: deleted }), "the awaited deletion ends the wait");
    }

    #[test]
    fn a_queue_key_belongs_to_the_queue_of_its_lock() {
        assert_eq!(queue_of("app/locks/job/694d7a1b2c3d"), "app/locks/job/");
        assert_eq!(queue_of("job/694d"), "job/");
        assert_eq!(queue_of("694d"), "");
    }

    /// On a real etcd: a session keeps at most one watch per group of keys. Waiting behind a new
    /// predecessor closes the watch kept on the old one, which would otherwise go on hearing that
    /// key's releases; queues of other locks, and the lock's release markers, keep theirs.
    #[tokio::test]
    async fn a_session_keeps_one_watch_per_queue_and_one_per_lock_markers() {
        let (session, _client) = crate::session::shared_test_session().await;
        let name = format!("kept-{}/job", session.lease);
        let queue = session.config.lock_prefix(&name);
        let other_queue = session.config.lock_prefix(&format!("kept-{}/report", session.lease));
        let marker = |lease_hex: &str| session.config.release_marker(&name, lease_hex);
        let open = |key: String| {
            let session = &session;
            async move {
                tokio::time::timeout(Duration::from_secs(10), KeyWatch::open(session, &key, Watched::Deletions))
                    .await
                    .expect("watch")
            }
        };
        let cache = WatchCache::default();
        cache.give_back(open(format!("{queue}a")).await);
        cache.give_back(open(format!("{other_queue}a")).await);
        cache.give_back(open(marker("a")).await);
        assert_eq!(cache.keys(), [format!("{queue}a"), format!("{other_queue}a"), marker("a")]);

        // The same predecessor again: the kept watch is reused.
        let reused = cache.take(&format!("{queue}a")).expect("the kept watch on the same key");
        cache.give_back(reused);
        // A new predecessor in the same queue: the old watch is closed, not kept beside it.
        assert!(cache.take(&format!("{queue}b")).is_none());
        assert_eq!(cache.keys(), [format!("{other_queue}a"), marker("a")]);
        cache.give_back(open(format!("{queue}b")).await);
        cache.give_back(open(format!("{queue}c")).await);
        assert_eq!(cache.keys(), [format!("{other_queue}a"), marker("a"), format!("{queue}c")]);
        // The lock's markers are a group of their own: a new predecessor's marker closes the
        // old one's and leaves the queue key's watch.
        assert!(cache.take(&marker("c")).is_none());
        assert_eq!(cache.keys(), [format!("{other_queue}a"), format!("{queue}c")]);
    }

    #[test]
    fn a_deletion_without_a_revision_counts_as_the_awaited_one() {
        assert_eq!(first_after([(EventType::Delete, 0)], EventType::Delete, 14), Some(15));
    }
}
