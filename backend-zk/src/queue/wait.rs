//! How a queued znode waits for the ones ahead of it to go. It watches the znode the grant rule
//! names (the predecessor: just before its own under the exclusive rule, the nearest writer ahead
//! for a reader) and, in the same round trip, the one before that (the second). When the second
//! goes, the waiter learns whether the predecessor now holds the lock (it does if the second was
//! the owner at the listing, or if the lock directory's data names the second: its holder's
//! release). The predecessor's deletion then makes the waiter first with no read.
//!
//! So the read that tells a holder's release from a waiter leaving happens while the predecessor
//! holds the lock, not between its release and the next hold: a hand-off is the release, the
//! server's notification, and nothing else. A deletion still unexplained when the predecessor
//! goes (a waiter that left, an expired session, the read still in flight) is explained by the
//! directory's data as before, and failing that the queue is listed again.
//!
//! The listing bounds what can still be ahead: nothing queued later sorts before us. So where
//! the grant rule would grant us with every znode of the listing there but the predecessor (a
//! reader whose nearest writer has only readers ahead), the predecessor's deletion grants us, and
//! nothing else is watched or read. A reader's release writes no record, so a reader as the
//! second is watched only where its going alone settles it, and a deletion that no record can
//! explain is followed by a listing at once.

use std::future::Future;

use distlock_core::backend::Grant;
use distlock_core::LockError;
use zookeeper_client::{Error as ZkError, EventType, OneshotWatcher};

use crate::place::Place;
use crate::session::ZkSession;

/// What the wait for the predecessor ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Nothing is left before our znode: we hold the lock.
    First,
    /// Something may still be before us: list the queue again.
    Relist,
}

/// Waits until the znode the grant rule named (`ahead[blocker]`: just before ours under the
/// exclusive rule, the nearest writer ahead for a reader) goes, watching the one before it too
/// where its going can tell us something (see the module comment). `ahead` is the listing's
/// znodes before ours, in queue order: whatever is before ours later is among them, since a znode
/// created later sorts after ours. So where the grant rule grants us even with all of them there
/// but the predecessor (a reader behind the only writer ahead), the predecessor's deletion makes
/// us first and nothing is read.
pub(crate) async fn predecessor_gone(
    place: &Place,
    dir: &str,
    ahead: &[String],
    blocker: usize,
) -> Result<Woken, LockError> {
    let session = &place.session;
    let Some(predecessor) = ahead.get(blocker) else {
        return Ok(Woken::First);
    };
    let granted_without = |gone: &[usize]| place.granted_without(ahead, gone);
    let mut predecessor_owns = granted_without(&[blocker]);
    let second_index = blocker.checked_sub(1).filter(|_| !predecessor_owns);
    // The second's going settles it where that alone leaves nothing blocking behind the
    // predecessor; else only an exclusive holder's release record can (a reader's says nothing).
    let second_settles = second_index.is_some_and(|i| granted_without(&[blocker, i]));
    let second = second_index
        .and_then(|i| ahead.get(i))
        .map(String::as_str)
        .filter(|second| second_settles || !crate::layout::is_shared(second));
    let named = [Some(predecessor.as_str()), second];
    // Whether a release record could name one of them: only an exclusive holder's does.
    let nameable = named.into_iter().flatten().any(|child| !crate::layout::is_shared(child));
    tracing::debug!(lock = %place.name, token = place.czxid, %predecessor, predecessor_owns, "waiting for the predecessor's znode to go");

    // Both watches in one round trip: each request is on the wire once its future is first polled.
    let watch = |child: &str| {
        let path = format!("{dir}/{child}");
        async move { watch_deletion(session, &path, "watch a znode ahead in the queue").await }
    };
    let (watched, second_watched) = tokio::join!(watch(predecessor), async {
        match second {
            Some(second) => watch(second).await.map(Some),
            None => Ok(None),
        }
    });
    let (watched, second_watched) = (watched?, second_watched?);
    let predecessor_deleted = deleted(watched);
    tokio::pin!(predecessor_deleted);
    let mut second_deleted = second_watched.map(|w| Box::pin(deleted(w)));
    let mut reading = None;

    let deleted = loop {
        tokio::select! {
            biased;
            _ = session.life.ended() => {
                return Err(LockError::SessionExpired { during: format!("waiting for lock {:?}", place.name.as_str()) });
            }
            gone = pending_or(&mut second_deleted) => {
                second_deleted = None;
                if gone && second_settles {
                    predecessor_owns = true;
                } else if gone {
                    reading = Some(Box::pin(last_release(session, dir)));
                }
            }
            data = pending_or(&mut reading) => {
                reading = None;
                let data = data?;
                predecessor_owns = names_any(data.as_deref(), named);
                if predecessor_owns {
                    tracing::debug!(lock = %place.name, token = place.czxid, %predecessor, "the predecessor holds the lock: its deletion makes us first");
                }
            }
            gone = &mut predecessor_deleted => break gone,
        }
    };
    if !deleted || !session.life.surely_alive() {
        return Ok(Woken::Relist);
    }
    if predecessor_owns {
        return Ok(Woken::First);
    }
    if !nameable {
        return Ok(Woken::Relist);
    }
    // A read already in flight may answer; if not, a fresh one.
    if let Some(reading) = reading {
        if names_any(reading.await?.as_deref(), named) {
            return Ok(Woken::First);
        }
    }
    let data = last_release(session, dir).await?;
    if names_any(data.as_deref(), named) {
        tracing::debug!(lock = %place.name, %predecessor, "the predecessor's deletion was a holder's release: first, without listing the queue");
        return Ok(Woken::First);
    }
    Ok(Woken::Relist)
}

/// A semaphore's first waiter (at `position` at the last listing, with only holders ahead),
/// when its mailbox told it nothing ([`super::permits`]): watches the lock directory's children
/// (one getChildren with a watch, which only the first waiter keeps) until fewer holders are
/// ahead: any holder's going admits it, whichever it is. A change that admits it not (a waiter
/// joining or leaving behind it) costs one listing more. `Relist` if the listing shows it is not
/// the first waiter.
pub(crate) async fn any_ahead_gone(place: &Place, dir: &str, position: usize) -> Result<Woken, LockError> {
    let session = &place.session;
    let own = place.path.rsplit('/').next().unwrap_or_default();
    tracing::debug!(lock = %place.name, token = place.czxid, position, "first waiter for a permit: watching the holders");
    loop {
        let (children, watcher) = session
            .request("watch the semaphore's holders", |client| {
                let dir = dir.to_owned();
                async move { client.list_and_watch_children(&dir).await }
            })
            .await?;
        let queue = crate::layout::queue_order(children, Some(place.recipe));
        let Some(now) = queue.iter().position(|c| c == own) else { return Ok(Woken::Relist) };
        match place.decide(&queue[..now]) {
            Grant::Granted if session.life.surely_alive() => return Ok(Woken::First),
            Grant::WaitForAnyAhead => {}
            _ => return Ok(Woken::Relist),
        }
        tokio::select! {
            biased;
            _ = session.life.ended() => {
                return Err(LockError::SessionExpired { during: format!("waiting for a permit of {:?}", place.name.as_str()) });
            }
            _ = watcher.changed() => {}
            // A backstop, not the mechanism: a children watch of the compose ensemble once went
            // unheard (a release of a holder admitted nobody for 10 s), cause not found.
            _ = tokio::time::sleep(PERMIT_RELIST) => {}
        }
    }
}

/// How long a semaphore's first waiter trusts a children watch that has not fired before it
/// lists again (one listing a second, of the one first waiter of a semaphore).
const PERMIT_RELIST: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the lock directory's data (the name of the znode whose holder released last) names
/// one of `children` that held exclusively. Only a holder's release writes a znode's name there,
/// in the multi that deletes that znode; names are unique (uuid and sequence number). An
/// exclusive holder (of a lock, an election, a write lock) is first in its queue, so if the data
/// names the predecessor, that was the owner and is gone; if it names the second, the predecessor
/// became the owner then, since nothing can be queued between it and the second. Either way, once
/// the predecessor is gone, nothing is left before us that blocks us. A reader's release says
/// nothing of the sort (other readers may hold beside it), so readers write no name and a
/// reader's name never counts.
pub(crate) fn names_any(data: Option<&[u8]>, children: [Option<&str>; 2]) -> bool {
    let Some(data) = data else { return false };
    children.into_iter().flatten().any(|child| data == child.as_bytes() && !crate::layout::is_shared(child))
}

/// The lock directory's data: the name of the znode whose holder released last (`None` if the
/// directory is gone).
pub(crate) async fn last_release(session: &ZkSession, dir: &str) -> Result<Option<Vec<u8>>, LockError> {
    session
        .request("read the lock's last release", |client| {
            let dir = dir.to_owned();
            async move {
                match client.get_data(&dir).await {
                    Ok((data, _)) => Ok(Some(data)),
                    Err(ZkError::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

/// Watches the znode at `path` for its deletion (getData with a watch); `None` if it is gone
/// already. `op` says what for, in errors.
pub(crate) async fn watch_deletion(
    session: &ZkSession,
    path: &str,
    op: &str,
) -> Result<Option<OneshotWatcher>, LockError> {
    session
        .request(op, |client| {
            let path = path.to_owned();
            async move {
                match client.get_and_watch_data(&path).await {
                    Ok((_, _, watcher)) => Ok(Some(watcher)),
                    Err(ZkError::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

/// Whether the watched znode was deleted (a znode already gone was); `false` for any other event
/// (its session's state changed: the caller lists again and finds out).
async fn deleted(watcher: Option<OneshotWatcher>) -> bool {
    match watcher {
        None => true,
        Some(watcher) => watcher.changed().await.event_type == EventType::NodeDeleted,
    }
}

/// The output of `future` if there is one; never ready otherwise: a step of the wait that has
/// not started (or has finished and been taken), polled in the same `select!` as the rest.
async fn pending_or<F: Future + Unpin>(future: &mut Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use distlock_core::LockName;
    use zookeeper_client::{Acls, CreateMode};

    use super::*;
    use crate::hold::release_as_holder;
    use crate::queue::lock_znode_options;
    use crate::session::shared_test_session;
    use distlock_core::backend::Recipe;

    const BOUND: Duration = Duration::from_secs(10);

    /// A fresh lock directory holding four queued znodes, the last one the waiter's: its
    /// session, the other znodes' session, the directory, and the queue (owner, second,
    /// predecessor, ours).
    async fn queue_of_four() -> (Arc<ZkSession>, Arc<ZkSession>, String, Vec<String>) {
        queue_of([Recipe::Lock; 4]).await
    }

    /// As [`queue_of_four`], with the znodes of `recipes` in that order.
    async fn queue_of(recipes: [Recipe; 4]) -> (Arc<ZkSession>, Arc<ZkSession>, String, Vec<String>) {
        let (waiter, others) = (shared_test_session().await, shared_test_session().await);
        let dir = others.config.lock_dir(&format!("wait-{}/job", uuid::Uuid::new_v4()));
        others
            .test_client()
            .mkdir(&dir, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
            .await
            .expect("the lock dir");
        let mut queue = Vec::new();
        for (i, (session, recipe)) in [&others, &others, &others, &waiter].into_iter().zip(recipes).enumerate() {
            let base = format!("{dir}/_c_{i}-{}", crate::layout::marker(recipe));
            let (_, sequence) =
                session.test_client().create(&base, b"", &lock_znode_options()).await.expect("a queue znode");
            queue.push(format!("_c_{i}-{}{sequence}", crate::layout::marker(recipe)));
        }
        (waiter, others, dir, queue)
    }

    fn place(session: &Arc<ZkSession>, dir: &str, queue: &[String]) -> Place {
        let path = format!("{dir}/{}", queue[3]);
        let recipe = crate::layout::recipe_of(&queue[3]).unwrap_or(Recipe::Lock);
        Place {
            session: session.clone(),
            name: LockName::new("job").expect("name"),
            path,
            czxid: 0,
            recipe,
            dir_version: None,
            marked: false,
        }
    }

    /// The waiter's wait behind `queue[2]` (its own znode is `queue[3]`), in a task of its own.
    fn wait_behind_the_third(
        waiter: &Arc<ZkSession>,
        dir: &str,
        queue: &[String],
    ) -> tokio::task::JoinHandle<Result<Woken, LockError>> {
        let (place, dir, queue) = (place(waiter, dir, queue), dir.to_owned(), queue.to_vec());
        tokio::spawn(async move { predecessor_gone(&place, &dir, &queue[..3], 2).await })
    }

    /// On a real ZooKeeper: a reader whose only writer ahead is waiting behind two readers
    /// watches that writer alone, and its deletion (here the writer leaving, the readers still
    /// holding) grants the reader with no request after it: nothing else ahead can block a
    /// reader, and nothing can be queued ahead of it later.
    #[tokio::test]
    async fn a_reader_behind_the_only_writer_ahead_is_granted_by_its_going_with_no_read() {
        let (waiter, others, dir, queue) = queue_of([Recipe::Read, Recipe::Read, Recipe::Write, Recipe::Read]).await;
        let before = waiter.requests();
        let wait = wait_behind_the_third(&waiter, &dir, &queue);
        distlock_tests::retry_until(BOUND, || async {
            if waiter.requests() > before {
                Ok(())
            } else {
                Err(())
            }
        })
        .await
        .expect("the reader watches the writer");
        others.test_client().delete(&format!("{dir}/{}", queue[2]), None).await.expect("the writer leaves");
        let woken = tokio::time::timeout(BOUND, wait).await.expect("woken").expect("task").expect("wait");
        assert_eq!(woken, Woken::First, "only readers are ahead");
        assert_eq!(waiter.requests() - before, 1, "one watch, on the writer alone, and no read");
    }

    /// On a real ZooKeeper: a writer behind readers watches its predecessor alone (a reader's
    /// going or release record cannot tell it that the rest are gone) and lists again when it
    /// goes, reading nothing in between.
    #[tokio::test]
    async fn a_writer_behind_readers_watches_its_predecessor_alone_and_lists_again() {
        let (waiter, others, dir, queue) = queue_of([Recipe::Read, Recipe::Read, Recipe::Read, Recipe::Write]).await;
        let before = waiter.requests();
        let wait = wait_behind_the_third(&waiter, &dir, &queue);
        release_as_holder(&others, &format!("{dir}/{}", queue[1])).await.expect("the second releases");
        release_as_holder(&others, &format!("{dir}/{}", queue[2])).await.expect("the predecessor releases");
        let woken = tokio::time::timeout(BOUND, wait).await.expect("woken").expect("task").expect("wait");
        assert_eq!(woken, Woken::Relist, "the first reader still holds");
        assert_eq!(waiter.requests() - before, 1, "one watch, and no read");
        assert!(others.test_client().check_stat(&format!("{dir}/{}", queue[0])).await.expect("stat").is_some());
    }

    /// On a real ZooKeeper: a waiter third in line reads the release record when the znode two
    /// ahead is released (during its predecessor's hold), so the predecessor's release makes it
    /// first with no request after that release: the hand-off is the release and the
    /// notification alone.
    #[tokio::test]
    async fn the_release_record_is_read_during_the_predecessors_hold() {
        let (waiter, others, dir, queue) = queue_of_four().await;
        let before = waiter.requests();
        let wait = wait_behind_the_third(&waiter, &dir, &queue);
        release_as_holder(&others, &format!("{dir}/{}", queue[0])).await.expect("the owner releases");
        release_as_holder(&others, &format!("{dir}/{}", queue[1])).await.expect("the second releases");
        // Two watches and one read of the directory's data.
        distlock_tests::retry_until(BOUND, || async {
            if waiter.requests() - before >= 3 {
                Ok(())
            } else {
                Err(())
            }
        })
        .await
        .expect("the waiter reads the release record once the second is gone");
        assert!(!wait.is_finished(), "the predecessor still holds: the wait goes on");
        let read = waiter.requests();
        release_as_holder(&others, &format!("{dir}/{}", queue[2])).await.expect("the predecessor releases");
        let woken = tokio::time::timeout(BOUND, wait).await.expect("woken").expect("task").expect("wait");
        assert_eq!(woken, Woken::First);
        assert_eq!(waiter.requests(), read, "no request between the predecessor's release and our hold");
        assert_eq!(read - before, 3, "two watches in one round trip, one read");
    }

    /// On a real ZooKeeper: znodes ahead that leave the queue (plain deletes, no release record)
    /// make no one first: the waiter lists the queue again.
    #[tokio::test]
    async fn waiters_that_leave_ahead_make_no_one_first() {
        let (waiter, others, dir, queue) = queue_of_four().await;
        let wait = wait_behind_the_third(&waiter, &dir, &queue);
        others.test_client().delete(&format!("{dir}/{}", queue[1]), None).await.expect("the second leaves");
        others.test_client().delete(&format!("{dir}/{}", queue[2]), None).await.expect("the predecessor leaves");
        let woken = tokio::time::timeout(BOUND, wait).await.expect("woken").expect("task").expect("wait");
        assert_eq!(woken, Woken::Relist, "the owner still holds");
        assert!(others.test_client().check_stat(&format!("{dir}/{}", queue[0])).await.expect("stat").is_some());
    }

    #[test]
    fn a_release_record_names_the_predecessor_or_the_znode_before_it() {
        let (predecessor, second) = ("_c_b-lock-0000000002", "_c_a-lock-0000000001");
        let ahead = [Some(predecessor), Some(second)];
        let named = |data: &str| names_any(Some(data.as_bytes()), ahead);
        assert!(named("_c_b-lock-0000000002"), "the predecessor's own release");
        assert!(named("_c_a-lock-0000000001"), "the second's release made the predecessor the owner");
        assert!(!named("_c_z-lock-0000000000"), "an older release says nothing of these two");
        assert!(!named(""), "queuing alone writes empty data, which names no znode");
        assert!(!names_any(None, ahead), "no directory, no record");
        assert!(names_any(Some(predecessor.as_bytes()), [Some(predecessor), None]), "no second");
        assert!(!names_any(Some(second.as_bytes()), [Some(predecessor), None]), "the second not known");
    }
}
