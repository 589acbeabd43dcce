//! How a permit leaves a semaphore's queue, and hands on what its going frees: one Txn deletes
//! its key (fenced by its create revision) and its mark, and reads the first N+1 keys left; a
//! second Txn, only where N or more are left, marks the key now N-th `granted` and the one after
//! it `first`, in their sessions' mailboxes ([`crate::permit_mailbox`]), each fenced by that
//! key's create revision and put on its lease.
//!
//! A holder's going admits exactly the key that was (N+1)-th, which is N-th after it: keys only
//! ever leave from ahead of a waiter, never join, so that key holds from then on, and no other
//! releaser can name it. A waiter's going (cancelled, perhaps at the very moment a release
//! admitted it) hands on the same way: where it had been admitted, the key now N-th is; where it
//! had not, that key holds already and the mark changes nothing for it. A contended grant thus
//! costs three requests, the waiter's queuing, the release and the hand-on, however many wait.

use std::num::NonZeroU32;

use distlock_core::LockError;
use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp};

use super::{kvs, revision_of};
use crate::permit_mailbox::{FIRST, GRANTED};
use crate::session::EtcdSession;

/// Removes the permit key `key` created at `revision` from the semaphore of `permits` at
/// `queue_prefix`, with its mark, and hands on (see the module's comment). Where the key is gone
/// already (a retried request whose first reply was lost, the lease's expiry, an operator), it
/// hands on all the same: a hand-on only ever marks keys as they stand in the read, so it is
/// never wrong, and the first attempt's may not have been sent.
///
/// Cancel safe as far as the server goes: each Txn is fenced, so a retry does nothing twice;
/// a hand-on not sent leaves the waiter it would have told to its own fallback.
pub(crate) async fn remove_permit(
    session: &EtcdSession,
    queue_prefix: &str,
    key: &str,
    revision: i64,
    permits: NonZeroU32,
    op: &str,
) -> Result<(), LockError> {
    let own_mark = session.config.permit_mark(session.lease, revision);
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, revision)])
        .and_then([
            TxnOp::delete(key, None),
            TxnOp::delete(own_mark.as_str(), None),
            TxnOp::get(queue_prefix, Some(first_keys(permits))),
        ])
        .or_else([TxnOp::delete(own_mark.as_str(), None), TxnOp::get(queue_prefix, Some(first_keys(permits)))]);
    let response = match session.txn(op, txn).await {
        Err(LockError::Unauthorized { reason, .. }) => {
            // A role granted the semaphore's keys but not the mailboxes: delete the key alone.
            // Its waiters' mailbox watches are refused too, so they wait by watches.
            tracing::debug!(%reason, "no permit marks for this role: releasing without handing on");
            session.mailbox.refuse();
            let txn = super::fenced_delete(key, Some(revision), session.lease);
            return session.txn(op, txn).await.map(drop);
        }
        other => other?,
    };
    let ops = response.op_responses();
    let left = ops.last().map(kvs).unwrap_or_default();
    hand_on(session, left, permits, revision_of(&response)).await;
    Ok(())
}

/// Reads the first N+1 keys of the queue and hands on as a release would: for a permit granted
/// without a mark (a holder's lease expired, which tells nobody), so that the waiter now first
/// in line hears it is.
pub(crate) async fn hand_on_after_grant(session: &EtcdSession, queue_prefix: &str, permits: NonZeroU32) {
    let read = session.request("read the first of the semaphore's queue", &session.kv, |mut kv| {
        let (queue_prefix, options) = (queue_prefix.to_owned(), first_keys(permits));
        async move { kv.get(queue_prefix, Some(options)).await }
    });
    match read.await {
        Ok(response) => {
            let at = response.header().map(|h| h.revision()).unwrap_or_default();
            hand_on(session, response.kvs(), permits, at).await;
        }
        Err(error) => tracing::debug!(%error, "could not read the semaphore's queue to hand on"),
    }
}

/// A read of the first N+1 keys of a semaphore's queue, oldest first.
fn first_keys(permits: NonZeroU32) -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(i64::from(permits.get()) + 1)
}

/// Marks the key N-th in `left` (the first keys of the queue, oldest first) `granted` and the
/// one after it `first`. A failure is only logged: the waiters' own fallbacks cover it.
pub(crate) async fn hand_on(session: &EtcdSession, left: &[KeyValue], permits: NonZeroU32, at: i64) {
    let admitted = permits.get() as usize - 1;
    let marks: Vec<TxnOp> = [(left.get(admitted), GRANTED), (left.get(admitted + 1), FIRST)]
        .into_iter()
        .filter_map(|(kv, mark)| Some(mark_txn(session, kv?, mark)))
        .collect();
    if marks.is_empty() {
        return;
    }
    if let Err(error) = session.txn("hand a permit on", Txn::new().and_then(marks)).await {
        tracing::debug!(%error, at, "could not hand the permit on; the waiters' fallbacks will find it");
        return;
    }
    if let Some(kv) = left.get(admitted) {
        tracing::info!(key = kv.key_str().unwrap_or("?"), token = kv.create_revision(), "hand-off: a permit granted");
    }
}

/// A Txn op that puts `mark` in the mailbox of `kv`'s session if `kv` still has its create
/// revision (so its lease lives), on that lease.
fn mark_txn(session: &EtcdSession, kv: &KeyValue, mark: &[u8]) -> TxnOp {
    let at = session.config.permit_mark(kv.lease(), kv.create_revision());
    let options = (kv.lease() != 0).then(|| PutOptions::new().with_lease(kv.lease()));
    TxnOp::txn(
        Txn::new()
            .when([Compare::create_revision(kv.key(), CompareOp::Equal, kv.create_revision())])
            .and_then([TxnOp::put(at, mark, options)]),
    )
}

#[cfg(test)]
mod tests {
    use etcd_client::DeleteOptions;

    use super::*;
    use crate::place::testing::place_behind;

    /// On a real etcd: a permit's going deletes its key and its own mark, and marks the key now
    /// N-th `granted` and the next `first`, nobody else; a retry (its key gone) marks the same
    /// keys again and nothing else.
    #[tokio::test]
    async fn a_permits_mark_goes_with_its_release() {
        let (place, client, _) = place_behind(&[]).await;
        let session = &place.session;
        let mut kv = client.kv_client();
        let mut behind = Vec::new();
        for entry in ["b1", "b2", "b3"] {
            let key = format!("{}{entry}", place.queue_prefix);
            let put = kv.put(key.as_str(), "", None).await.expect("queue behind");
            behind.push(put.header().expect("header").revision());
        }
        let own_mark = session.config.permit_mark(session.lease, place.revision);
        kv.put(own_mark.as_str(), GRANTED, None).await.expect("our own mark");
        let two = NonZeroU32::new(2).expect("two");
        remove_permit(session, &place.queue_prefix, &place.key, place.revision, two, "release").await.expect("release");
        let reader = kv.clone();
        let mark_of = |revision: i64| {
            let (mut kv, at) = (reader.clone(), session.config.permit_mark(0, revision));
            async move {
                let read = kv.get(at, None).await.expect("read a mark");
                read.kvs().first().map(|kv| kv.value().to_vec())
            }
        };
        assert_eq!(mark_of(behind[0]).await, None, "the first key behind held already: no mark");
        assert_eq!(mark_of(behind[1]).await.as_deref(), Some(GRANTED), "the key now 2nd is admitted");
        assert_eq!(mark_of(behind[2]).await.as_deref(), Some(FIRST), "the key after it is first in line");
        let own = kv.get(own_mark.as_str(), None).await.expect("read our mark");
        assert_eq!(own.count(), 0, "our own mark went with our key");
        let marks = session.config.permit_mailbox(0);
        kv.delete(marks.as_str(), Some(DeleteOptions::new().with_prefix())).await.expect("clear the marks");
        remove_permit(session, &place.queue_prefix, &place.key, place.revision, two, "release")
            .await
            .expect("release again");
        assert_eq!(mark_of(behind[0]).await, None, "still no mark for a holder");
        assert_eq!(mark_of(behind[1]).await.as_deref(), Some(GRANTED), "the same key is admitted");
        assert_eq!(mark_of(behind[2]).await.as_deref(), Some(FIRST), "the same key is first in line");
    }
}
