//! How a permit of a semaphore waits, herd-free, under [`distlock_core::backend::GrantRule::Permits`]:
//! the first waiter (exactly as many keys ahead as there are permits, all holding) watches the
//! queue's deletions from the revision of its read, so whichever holder releases, the one
//! deletion admits it with no read; a waiter further back watches only its predecessor, which
//! either goes or, once granted after waiting, marks itself (a put of its own key, fenced by its
//! create revision): either way the waiter reads once and may be the first waiter then. Each
//! release thus wakes the one waiter it admits, and each grant costs the same with 1,000
//! waiters as with one. Watches start at the read's revision, so nothing between the read and
//! the watch is missed.

use distlock_core::backend::Recipe;
use distlock_core::LockError;
use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions};

use super::wait::read_place;
use super::{queue_keys, Queued};
use crate::layout::is_queue_key;
use crate::place::Place;
use crate::watch::{wait_for_matching, WaitEnd};

impl Queued {
    /// Waits until the permit is granted; marks it if it waited (see the module comment).
    pub(crate) async fn wait_for_permit(mut self) -> Result<Place, LockError> {
        if self.is_first() {
            self.cleanup.armed = false;
            return Ok(self.place);
        }
        let place = &self.place;
        let session = &place.session;
        let during = || format!("waiting for a permit of {:?}", place.name.as_str());
        let Recipe::Permit(permits) = place.recipe else { return Err(not_a_permit(place)) };
        let permits = permits.get() as usize;
        // What we know without a read: where we stood at a revision (from our predecessor's
        // mark), so that the first waiter's watch starts right after it.
        let mut known: Option<Standing> = None;
        let granted = loop {
            let standing = match known.take() {
                Some(standing) => standing,
                None => {
                    let (read_at, response) = read_place(place, "check place in the semaphore's queue", None).await?;
                    let ops = response.op_responses();
                    let below = queue_keys(&place.queue_prefix, ops.first()).unwrap_or_default();
                    place.check_permits(&below)?;
                    let predecessor = below.first().and_then(|kv| kv.key_str().ok()).map(str::to_owned);
                    Standing { at: read_at, ahead: below.len(), predecessor }
                }
            };
            tracing::debug!(lock = %place.name, token = place.revision, at = standing.at, ahead = standing.ahead, "place in the semaphore's queue");
            if standing.ahead < permits {
                break standing;
            }
            if standing.ahead == permits {
                // The first waiter: every key ahead holds, and any one's deletion admits us.
                tracing::debug!(lock = %place.name, token = place.revision, "first waiter for a permit: watching the holders");
                let watch = holder_left(place, standing.at + 1);
                let end = tokio::select! {
                    biased;
                    _ = session.life.ended() => return Err(LockError::SessionExpired { during: during() }),
                    end = watch => end,
                };
                match end {
                    // Our own key surely lives (our lease does): one fewer holds ahead of it.
                    WaitEnd::Happened { revision } if session.life.surely_alive() => {
                        break Standing { at: revision, ahead: permits - 1, predecessor: None };
                    }
                    _ => continue,
                }
            }
            // Further back: our predecessor goes, or marks itself granted with where it stood.
            let Some(predecessor) = standing.predecessor else { continue };
            tracing::debug!(lock = %place.name, token = place.revision, %predecessor, "waiting for the predecessor to get a permit or leave");
            let event = tokio::select! {
                biased;
                _ = session.life.ended() => return Err(LockError::SessionExpired { during: during() }),
                event = predecessor_changed(place, &predecessor, standing.at + 1) => event,
            };
            // Granted where it stood at a revision: we stood right behind it then.
            known = event.map(|(at, its_ahead)| Standing { at, ahead: its_ahead + 1, predecessor: Some(predecessor) });
        };
        self.mark_granted(&granted).await?;
        tracing::info!(lock = %self.place.name, token = self.place.revision, "hand-off: a permit granted");
        self.cleanup.armed = false;
        Ok(self.place)
    }

    /// Puts our key again (same lease) if it still has our create revision, with where we were
    /// granted: the waiter behind us, watching our key, learns that we hold and where it stood
    /// then, and needs no read to become the first waiter.
    async fn mark_granted(&self, granted: &Standing) -> Result<(), LockError> {
        let place = &self.place;
        let value = format!(
            "{} granted at revision {} with {} ahead",
            String::from_utf8_lossy(&place.recipe_value()),
            granted.at,
            granted.ahead
        );
        let txn = Txn::new()
            .when([Compare::create_revision(place.key.as_str(), CompareOp::Equal, place.revision)])
            .and_then([TxnOp::put(place.key.as_str(), value, Some(PutOptions::new().with_lease(place.session.lease)))]);
        place.session.txn("mark our permit granted", txn).await.map(drop)
    }
}

/// Where a permit stood in its queue: at revision `at`, with `ahead` keys below its own, the
/// nearest of them `predecessor` (if known).
#[derive(Debug)]
struct Standing {
    at: i64,
    ahead: usize,
    predecessor: Option<String>,
}

/// Waits, from revision `from`, for the deletion of a key of the queue older than ours: a
/// holder's, when we are the first waiter. Its revision.
async fn holder_left(place: &Place, from: i64) -> WaitEnd {
    let (own, prefix) = (place.revision, place.queue_prefix.clone());
    let older_deleted = move |response: &etcd_client::WatchResponse| {
        response.events().iter().find_map(|event| {
            let gone = event.prev_kv().filter(|kv| is_queue_key(&prefix, kv.key()))?;
            let deleted_at = event.kv().map(|kv| kv.mod_revision()).unwrap_or_default();
            (event.event_type() == EventType::Delete && gone.create_revision() < own).then_some(deleted_at)
        })
    };
    let options = WatchOptions::new().with_prefix().with_prev_key().with_filters([WatchFilterType::NoPut]);
    wait_for_matching(&place.session, &place.queue_prefix, options, from, older_deleted).await
}

/// Waits, from revision `from`, for an event of our predecessor's key: `Some((revision, ahead))`
/// if it marked itself granted at that revision with that many keys ahead of it; `None` if it
/// went (or marked in a way not understood): then a read tells where we stand.
async fn predecessor_changed(place: &Place, predecessor: &str, from: i64) -> Option<(i64, usize)> {
    let marked = std::sync::Mutex::new(None);
    let any_event = |response: &etcd_client::WatchResponse| {
        let event = response.events().first()?;
        if event.event_type() == EventType::Put {
            let value = event.kv().and_then(|kv| kv.value_str().ok()).unwrap_or_default();
            *marked.lock().unwrap_or_else(|p| p.into_inner()) = parse_mark(value);
        }
        Some(event.kv().map(|kv| kv.mod_revision()).unwrap_or_default())
    };
    wait_for_matching(&place.session, predecessor, WatchOptions::new(), from, any_event).await;
    marked.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// The revision and the keys ahead in a mark (`"<permits> granted at revision <r> with <n> ahead"`).
fn parse_mark(value: &str) -> Option<(i64, usize)> {
    let rest = value.split_once(" granted at revision ")?.1;
    let (at, rest) = rest.split_once(" with ")?;
    let ahead = rest.strip_suffix(" ahead")?;
    Some((at.parse().ok()?, ahead.parse().ok()?))
}

/// A place not queued for a permit was sent to the permit's wait: a bug of ours.
fn not_a_permit(place: &Place) -> LockError {
    LockError::Backend {
        backend: "etcd",
        op: format!("wait for a permit of {:?}", place.name.as_str()),
        retryable: false,
        source: "the place was not queued for a permit: a distlock bug".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_says_where_its_permit_was_granted() {
        assert_eq!(parse_mark("4 granted at revision 812 with 3 ahead"), Some((812, 3)));
        for not_a_mark in ["4", "4 granted at revision x with 3 ahead", "4 granted at revision 812 with 3", ""] {
            assert_eq!(parse_mark(not_a_mark), None, "{not_a_mark:?}");
        }
    }
}
