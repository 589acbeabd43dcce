//! Waiting for one key's deletion with a watch that misses nothing: it starts from a given
//! revision, and after a broken stream (server restart, leader change) it is re-created from the
//! same revision. A compacted start revision is reported so the caller can re-read the state.

use std::time::Duration;

use etcd_client::{EventType, WatchFilterType, WatchOptions};

use crate::session::EtcdSession;

/// How a wait for a deletion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeleteWait {
    /// The key was deleted at this revision.
    Deleted { revision: i64 },
    /// The history since the start revision was compacted: read the current state instead.
    Compacted,
}

/// Waits until `key` is deleted at a revision `>= from_revision`. Retries broken watches
/// forever; the caller bounds the wait (session end, cancellation).
///
/// Cancel safe: dropping the future closes the watch.
pub(crate) async fn wait_for_delete(session: &EtcdSession, key: &str, from_revision: i64) -> DeleteWait {
    let mut backoff = Duration::from_millis(20);
    loop {
        session.count();
        let options = WatchOptions::new().with_start_revision(from_revision).with_filters([WatchFilterType::NoPut]);
        let mut watches = session.client.watch_client();
        match watches.watch(key, Some(options)).await {
            Ok(mut stream) => {
                while let Ok(Some(response)) = stream.message().await {
                    if response.compact_revision() > 0 {
                        return DeleteWait::Compacted;
                    }
                    if let Some(event) = response.events().iter().find(|e| e.event_type() == EventType::Delete) {
                        let revision = event.kv().map(|kv| kv.mod_revision()).unwrap_or(from_revision);
                        return DeleteWait::Deleted { revision };
                    }
                    if response.canceled() {
                        break;
                    }
                    backoff = Duration::from_millis(20);
                }
            }
            Err(error) => tracing::debug!(key, %error, "etcd watch could not be created; retrying"),
        }
        tracing::debug!(key, from_revision, "etcd watch broken; re-creating it from the same revision");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}
