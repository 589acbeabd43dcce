//! How a permit leaves a semaphore's queue, and hands on what its going frees: one Txn deletes
//! its key (fenced by its create revision) and its mark, and reads the first N+1 keys left; a
//! second Txn, only where N or more are left, marks the key now N-th `granted` and the one after
//! it `first`, in their sessions' mailboxes ([`crate::permit_mailbox`]), each fenced by that
//! key's create revision and put on its lease.
//!
//! A holder's going admits exactly the key that was (N+1)-th, which is N-th after it: keys only
//! ever leave from ahead of a waiter, never join, so that key holds from then on, and no other
//! releaser can name it. The keys left that are older than the one that went tell where it
//! stood, so a waiter's going (cancelled, perhaps at the very moment a release admitted it)
//! hands on what it changes: admitted, as a holder's; first in line, `first` for the key behind
//! it; further back, nothing. A contended grant thus costs three requests, the waiter's
//! queuing, the release and the hand-on, however many wait.

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
    // Where our key stood: the keys left that are older than ours were ahead of it. A key gone
    // already stood anywhere, as far as we know.
    let ahead = left.iter().filter(|kv| kv.create_revision() < revision).count();
    let n = permits.get() as usize;
    let marks = match ahead {
        _ if !response.succeeded() => Marks::GrantedAndFirst,
        ahead if ahead < n => Marks::GrantedAndFirst,
        // We were first in line: the key behind us is now.
        ahead if ahead == n => Marks::First,
        // A waiter further back: its going changes nobody's place that matters.
        _ => return Ok(()),
    };
    hand_on(session, left, permits, marks, revision_of(&response)).await;
    Ok(())
}

/// Which marks a hand-on puts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marks {
    /// `granted` for the key N-th, `first` for the next: after a permit among the first N went.
    GrantedAndFirst,
    /// `first` for the key after the N-th: after the waiter first in line went.
    First,
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
            hand_on(session, response.kvs(), permits, Marks::GrantedAndFirst, at).await;
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
/// one after it `first` (or only that one, as `marks` says). A failure is only logged: the
/// waiters' own fallbacks cover it.
async fn hand_on(session: &EtcdSession, left: &[KeyValue], permits: NonZeroU32, marks: Marks, at: i64) {
    let admitted = permits.get() as usize - 1;
    let granted = (marks == Marks::GrantedAndFirst).then(|| left.get(admitted)).flatten();
    let marks: Vec<TxnOp> = [(granted, GRANTED), (left.get(admitted + 1), FIRST)]
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
    if let Some(kv) = granted {
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
        for revision in &behind {
            kv.delete(session.config.permit_mark(0, *revision), None).await.expect("clear the marks");
        }
        remove_permit(session, &place.queue_prefix, &place.key, place.revision, two, "release")
            .await
            .expect("release again");
        assert_eq!(mark_of(behind[0]).await, None, "still no mark for a holder");
        assert_eq!(mark_of(behind[1]).await.as_deref(), Some(GRANTED), "the same key is admitted");
        assert_eq!(mark_of(behind[2]).await.as_deref(), Some(FIRST), "the same key is first in line");
    }

    /// On a real etcd: a waiter's going marks only the places it changes: the first in line's
    /// makes the key behind it first in line (and admits nobody); one further back marks nobody.
    #[tokio::test]
    async fn a_waiter_going_marks_only_the_places_it_changes() {
        let one = NonZeroU32::new(1).expect("one");
        for (ahead, behind_is_first) in [(&["holder"][..], true), (&["holder", "waiter"][..], false)] {
            let (place, client, ahead_keys) = place_behind(ahead).await;
            let session = &place.session;
            let mut kv = client.kv_client();
            let behind = format!("{}behind", place.queue_prefix);
            let behind = kv.put(behind.as_str(), "", None).await.expect("queue behind").header().expect("h").revision();
            remove_permit(session, &place.queue_prefix, &place.key, place.revision, one, "leave").await.expect("leave");
            // Marks of this queue's keys only: other tests' plain keys share the mailbox of lease 0.
            let mut found = Vec::new();
            for revision in ahead_keys.iter().map(|(_, revision)| *revision).chain([behind]) {
                let mark = session.config.permit_mark(0, revision);
                let read = kv.get(mark.as_str(), None).await.expect("read a mark");
                found.extend(read.kvs().iter().map(|kv| (revision, kv.value().to_vec())));
                kv.delete(mark.as_str(), None).await.expect("clear the mark");
            }
            let expected = match behind_is_first {
                true => vec![(behind, FIRST.to_vec())],
                false => vec![],
            };
            assert_eq!(found, expected, "{} ahead of the waiter that left", ahead_keys.len());
        }
    }
}
