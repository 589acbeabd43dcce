//! The waiter's watch on its predecessor's release marker. A holder's release writes its own
//! marker (`<prefix>//released/<name>//<entry>`, the entry being its key's last segment) in the
//! Txn that deletes its key. The waiter behind it watches that marker beside the key itself: a
//! write of the marker after the key's creation is that key's release by its holder, so nothing
//! older is left and the waiter is first, with no request after the release.
//!
//! The two events of that revision come to two watches, in no set order (etcd notifies a
//! revision's watchers by walking a map). A deletion heard first waits up to [`MARKER_GRACE`] for
//! the marker's write, which the server sent in the same pass. Only if it does not come (a
//! waiter that left, an expired lease, a Go or `etcdctl` holder, which write no marker, or a
//! marker watch etcd has not synced yet) does the waiter ask the server ([`crate::queue`]).
//!
//! A role not granted the marker prefix gets its marker watch cancelled ("permission denied")
//! until the session learns of the refusal from a Txn and stops watching markers. etcd before
//! 3.4.8 (and 3.3.21) then stopped reading the stream's later requests (etcd issue 11708), which
//! would leave the session's new watches unanswered: use a fixed etcd with such roles.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::place::Place;
use crate::session::EtcdSession;
use crate::watch::{KeyWatch, WaitEnd, Watched};

/// How long a waiter that heard its predecessor's deletion waits for the marker's write of the
/// same revision before asking the server. The server sends both notifications in one pass over
/// the same stream, so the write trails the deletion by the time it takes to read one message.
pub(crate) const MARKER_GRACE: Duration = Duration::from_millis(2);

/// The release marker of the queue key `key` in `place`'s queue (the key's holder writes it).
/// A reader's key has none: readers hold side by side, so a reader's release never means that
/// it was first.
pub(crate) fn marker_of(place: &Place, key: &str) -> Option<String> {
    if crate::layout::is_reader_key(&place.queue_prefix, key.as_bytes()) {
        return None;
    }
    let entry = key.strip_prefix(place.queue_prefix.as_str())?;
    Some(place.session.config.release_marker(place.name.as_str(), entry))
}

/// A watch on the predecessor's release marker, if the session has one, or is opening one.
pub(crate) struct MarkerWatch {
    opening: Option<Pin<Box<dyn Future<Output = Option<KeyWatch>> + Send>>>,
    watch: Option<KeyWatch>,
}

impl MarkerWatch {
    /// The watch the session kept on `marker`, or a new one, opened in the background of the
    /// wait (one request; the wait never waits for it). None when the server has refused the
    /// session its markers; a refused watch never hears anything.
    pub(crate) fn start(session: &Arc<EtcdSession>, marker: Option<String>) -> MarkerWatch {
        let Some(marker) = marker.filter(|_| session.markers.allowed()) else {
            return MarkerWatch { opening: None, watch: None };
        };
        if let Some(kept) = session.watches.take(&marker) {
            return MarkerWatch { opening: None, watch: Some(kept) };
        }
        let session = session.clone();
        let opening = async move { KeyWatch::try_open(&session, &marker, Watched::Writes).await };
        MarkerWatch { opening: Some(Box::pin(opening)), watch: None }
    }

    /// Resolves with the revision of the marker's first write after `created` (the
    /// predecessor's create revision): the predecessor's release by its holder. Never resolves
    /// without a watch, or once etcd compacted the history it needed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the watch (or its opening) stays in `self`, and a write not yet returned is
    /// heard by the next call.
    pub(crate) async fn written_after(&mut self, session: &EtcdSession, created: i64) -> i64 {
        if let Some(opening) = self.opening.as_mut() {
            self.watch = opening.await;
            self.opening = None;
        }
        if let Some(watch) = self.watch.as_mut() {
            match watch.event_after(session, created).await {
                WaitEnd::Happened { revision } => return revision,
                WaitEnd::Compacted => self.watch = None,
            }
        }
        std::future::pending().await
    }

    /// After the predecessor's deletion: whether the marker's write (see
    /// [`MarkerWatch::written_after`]) comes within [`MARKER_GRACE`]. A watch still opening
    /// started too late to hear it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`MarkerWatch::written_after`].
    pub(crate) async fn written_soon(&mut self, session: &EtcdSession, created: i64) -> bool {
        self.watch.is_some() && tokio::time::timeout(MARKER_GRACE, self.written_after(session, created)).await.is_ok()
    }

    /// Waits until the watch is open; whether it is.
    #[cfg(test)]
    pub(crate) async fn opened(&mut self) -> bool {
        if let Some(opening) = self.opening.take() {
            self.watch = opening.await;
        }
        self.watch.is_some()
    }

    /// Keeps the watch for the session's next wait behind the same key (one still opening is
    /// closed).
    pub(crate) fn keep(self, session: &EtcdSession) {
        if let Some(watch) = self.watch {
            session.watches.give_back(watch);
        }
    }
}

/// Notes that the server refused us the release markers: from now on the session does without.
pub(crate) fn markers_refused(session: &EtcdSession, reason: &str) {
    let prefix = session.config.release_marker_prefix();
    session.markers.refuse("etcd", &prefix, reason, "grant the role read and write on that prefix to restore them");
}
