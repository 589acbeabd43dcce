//! A granted place as a hold: its loss signal, a watch on its own key (after a grace period),
//! the release (a Txn fenced by the key's create revision that writes the release marker where
//! the holder waited, else a plain delete under [`crate::key_generations`]' rule), and an
//! election's proclaim.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distlock_core::{
    backend::{proclaimed, LossSignal, Recipe, ServerHold, ServerProclaim, ServerRelease},
    FencingToken, LockError, LossReason,
};
use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, PutOptions, Txn, TxnOp};
use tokio_util::sync::CancellationToken;

use crate::place::Place;
use crate::queue::{delete_in_background, fenced_delete, remove_permit};
use crate::release_marker::{marker_of, markers_refused};
use crate::session::EtcdSession;
use crate::watch::{wait_for_delete, WaitEnd};

/// How long a hold lasts before its own key gets a deletion watch. Short holds (most of them)
/// then cost two requests; the watch starts from the key's create revision, so a deletion
/// before it was created is still seen.
const OWN_KEY_WATCH_GRACE: Duration = Duration::from_millis(200);

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
            queue_prefix: place.queue_prefix,
            key_stem: place.key_stem,
            key: place.key,
            revision: place.revision,
            marker,
            permits: place.recipe.permits(),
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
        let written = session.txn("proclaim a new value", txn).await.map(|response| response.succeeded());
        proclaimed(written, &self.key, FencingToken::new(self.revision as u64))
    }
}

/// Deletes the holder's key: with the release marker (if the holder has one to write) in a Txn
/// fenced by the key's create revision, else with a plain delete.
struct EtcdRelease {
    session: Arc<EtcdSession>,
    /// The queue our key is in, by which a release retried in the background is kept.
    queue_prefix: String,
    /// What our key's name starts with: a delete that may land late retires its generation.
    key_stem: String,
    key: String,
    revision: i64,
    marker: Option<String>,
    /// A permit's number of permits: its release hands on ([`crate::queue::remove_permit`]).
    permits: Option<NonZeroU32>,
    registration: u64,
    released: CancellationToken,
}

/// The holder's release: if our key still has our revision, delete it and write the release
/// marker (naming the key, on our lease) at the same revision. Only a holder's release writes
/// the marker: a waiter that leaves, or an expired lease, deletes the key alone.
pub(crate) fn release_txn(key: &str, revision: i64, marker: &str, lease: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, revision)])
        .and_then([TxnOp::delete(key, None), TxnOp::put(marker, key, Some(PutOptions::new().with_lease(lease)))])
}

impl EtcdRelease {
    /// Deletes our key with one plain delete: no key of that name but ours can exist while we
    /// hold it. If no reply says the delete was applied, it may be applied later, so the queue
    /// moves to a new key generation ([`crate::key_generations`]) before the next hold can
    /// queue, and a delete fenced by the key's create revision, which may be retried, finishes.
    async fn delete_key(&self) -> Result<(), LockError> {
        let session = &self.session;
        session.count();
        let mut kv = session.kv.clone();
        let timeout = session.config.request_timeout;
        match tokio::time::timeout(timeout, kv.delete(self.key.as_str(), None)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) => tracing::debug!(key = %self.key, %error, "release's delete unconfirmed: retrying fenced"),
            Err(_) => tracing::debug!(key = %self.key, "release's delete unanswered: retrying fenced"),
        }
        session.key_generations.retire(&self.key_stem);
        let txn = fenced_delete(&self.key, Some(self.revision), session.lease);
        session.txn("release the lock", txn).await.map(drop)
    }
}

#[async_trait]
impl ServerRelease for EtcdRelease {
    async fn release(self: Box<Self>) -> Result<(), LockError> {
        self.released.cancel();
        self.session.life.holds().remove(self.registration);
        let session = &self.session;
        let released = match self.marker.as_deref().filter(|_| session.markers.allowed()) {
            None if let Some(permits) = self.permits => {
                remove_permit(session, &self.queue_prefix, &self.key, self.revision, permits, "release the permit")
                    .await
            }
            None => self.delete_key().await,
            Some(marker) => match session
                .txn("release the lock", release_txn(&self.key, self.revision, marker, session.lease))
                .await
            {
                Err(LockError::Unauthorized { reason, .. }) => {
                    markers_refused(session, &reason);
                    self.delete_key().await
                }
                other => other.map(drop),
            },
        };
        match released {
            Ok(_) => Ok(()),
            // The session is gone, and with it the key.
            Err(LockError::SessionExpired { .. }) => Ok(()),
            Err(error) => {
                // Retried in the background, fenced; the session queues here again only after.
                delete_in_background(
                    &self.session,
                    &self.queue_prefix,
                    &self.key,
                    Some(self.revision),
                    self.permits,
                    "release the lock",
                );
                Err(LockError::ReleaseUnconfirmed {
                    name: self.key.clone(),
                    token: FencingToken::new(self.revision as u64),
                    backstop: self.session.config.ttl,
                    source: Some(Box::new(error)),
                })
            }
        }
    }
}
