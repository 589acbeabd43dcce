//! How a permit of a semaphore waits, herd-free, under [`distlock_core::backend::GrantRule::Permits`]:
//! the first waiter (exactly as many keys ahead as there are permits, all holding) watches the
//! queue's deletions from the revision of its read, so whichever holder releases, the one
//! deletion admits it with no read; a waiter further back watches only its predecessor, which
//! either goes or, once granted after waiting, marks itself (a put of its own key, fenced by its
//! create revision): either way the waiter reads once and may be the first waiter then. Each
//! release thus wakes the one waiter it admits, and each grant costs the same with 1,000
//! waiters as with one. Watches start at the read's revision, so nothing between the read and
//! the watch is missed.

use distlock_core::backend::Grant;
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
        loop {
            let (read_at, response) = read_place(place, "check place in the semaphore's queue", None).await?;
            let ops = response.op_responses();
            let below = queue_keys(&place.queue_prefix, ops.first()).unwrap_or_default();
            place.check_permits(&below)?;
            let (grant, ahead) = place.decide(&below);
            tracing::debug!(lock = %place.name, token = place.revision, read_at, ahead = below.len(), ?grant, "permit queue read");
            let wait = match grant {
                Grant::Granted => break,
                Grant::WaitForAnyAhead => {
                    tracing::debug!(lock = %place.name, token = place.revision, read_at, "first waiter for a permit: watching the holders");
                    let own = place.revision;
                    let prefix = place.queue_prefix.clone();
                    let holder_left = move |response: &etcd_client::WatchResponse| {
                        response.events().iter().find_map(|event| {
                            let gone = event.prev_kv().filter(|kv| is_queue_key(&prefix, kv.key()))?;
                            let deleted_at = event.kv().map(|kv| kv.mod_revision()).unwrap_or_default();
                            (event.event_type() == EventType::Delete && gone.create_revision() < own)
                                .then_some(deleted_at)
                        })
                    };
                    let options =
                        WatchOptions::new().with_prefix().with_prev_key().with_filters([WatchFilterType::NoPut]);
                    let watch = wait_for_matching(session, &place.queue_prefix, options, read_at + 1, holder_left);
                    tokio::select! {
                        biased;
                        _ = session.life.ended() => return Err(LockError::SessionExpired { during: during() }),
                        end = watch => end,
                    }
                }
                // (The permits rule never waits behind one key; watching one for any event is
                // the safe reading of it.)
                Grant::WaitUntilGranted(predecessor) | Grant::WaitBehind(predecessor) => {
                    let predecessor = ahead.get(predecessor).and_then(|kv| kv.key_str().ok()).unwrap_or_default();
                    tracing::debug!(lock = %place.name, token = place.revision, %predecessor, "waiting for the predecessor to get a permit or leave");
                    let any_event = |response: &etcd_client::WatchResponse| {
                        response.events().first().map(|e| e.kv().map(|kv| kv.mod_revision()).unwrap_or_default())
                    };
                    let watch = wait_for_matching(session, predecessor, WatchOptions::new(), read_at + 1, any_event);
                    tokio::select! {
                        biased;
                        _ = session.life.ended() => return Err(LockError::SessionExpired { during: during() }),
                        _ = watch => continue,
                    }
                }
            };
            tracing::debug!(lock = %place.name, token = place.revision, ?wait, "a holder left");
            // A holder's deletion admits the first waiter, if our own key still lives.
            if matches!(wait, WaitEnd::Happened { .. }) && session.life.surely_alive() {
                break;
            }
        }
        self.mark_granted().await?;
        tracing::info!(lock = %self.place.name, token = self.place.revision, "hand-off: a permit granted");
        self.cleanup.armed = false;
        Ok(self.place)
    }

    /// Puts our key again (same value, same lease) if it still has our create revision: the
    /// waiter behind us, watching it, learns that we hold and that it may be the first waiter.
    async fn mark_granted(&self) -> Result<(), LockError> {
        let place = &self.place;
        let value = place.recipe_value();
        let txn = Txn::new()
            .when([Compare::create_revision(place.key.as_str(), CompareOp::Equal, place.revision)])
            .and_then([TxnOp::put(place.key.as_str(), value, Some(PutOptions::new().with_lease(place.session.lease)))]);
        place.session.txn("mark our permit granted", txn).await.map(drop)
    }
}
