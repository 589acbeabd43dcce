//! A semaphore's permits: how a permit queues, waits, is handed on and leaves.
//!
//! **Queuing** is one multi that creates the permit znode, writes the lock directory's data and
//! creates the permit's doorbell ([`crate::layout::permit_doorbell`]), an empty ephemeral znode
//! in its session's mailbox. The directory's stat in the reply counts its children, and our
//! znode is the newest, so the count less one is how many are ahead. Fewer than N ahead:
//! granted, with no listing. Where the session has not checked the semaphore's N lately
//! ([`PermitChecks`]), the listing is pipelined behind the multi, and a client asking another N
//! gets `PermitsMismatch`.
//!
//! **The releaser rings the doorbells.** One multi deletes the holder's znode and its doorbell
//! and writes the directory's data (its stat: the directory's cversion and numChildren right
//! after the delete), with the listing pipelined behind it, so the listing shows the queue after
//! our going. Our going admitted the entry that was N-th right after it; each deletion between
//! ours and the listing moved it one place ahead at most. cversion counts a directory's child
//! creations and deletions, numChildren the creations less the deletions, so the two stats give
//! the deletions in between exactly (d) ([`ChildChanges`]). A second multi writes `granted` to the
//! doorbells of the entries at places N−d to N. Writes do not conflict, so releases at the same
//! moment need no retries; a doorbell rung twice costs a notification, and a ring only ever
//! tells an entry among the first N, which holds by the queue's own rule. A doorbell gone
//! (its permit released already) fails the ring's multi, which goes again without it.
//!
//! A release whose multi leaves fewer than N znodes admitted nobody: it lists nothing, and the
//! listing is pipelined only where the session's releases lately left N or more
//! (`ZkSession::permits_admitting`). A release that met nobody at its queuing first tries one
//! multi that deletes and checks that the directory's data version is still its queuing's
//! (nobody queued since).
//!
//! **The waiter hears its doorbell** on its session's mailbox watch ([`crate::permit_mailbox`]):
//! a contended grant is the waiter's queuing and the releaser's multi, listing and ring, with
//! nothing from the waiter in between. What a ring cannot cover (a holder whose session expired
//! tells nobody) the waiter covers itself: first in line (N ahead) and told nothing for a tenth
//! of the session timeout, it watches the holders ([`wait::any_ahead_gone`]); further back, it
//! lists again after a session timeout without news.
//!
//! **Leaving** is a release: a waiter's going admits nobody unless it was admitted itself.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use distlock_core::backend::Heard;
use distlock_core::LockError;
use tokio::time::Instant;
use zookeeper_client::{Error as ZkError, MultiWriteError, MultiWriteResult};

use super::{wait, Queued};
use crate::layout::{permit_doorbell, queue_order};
use crate::permit_mailbox::{Inbox, Watching};
use crate::place::Place;
use crate::session::ZkSession;
use wait::Woken;

/// How long a session trusts its last check of a semaphore's N before it lists again at
/// queuing.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The semaphores whose N the session checked lately, by lock directory.
#[derive(Debug, Default)]
pub(crate) struct PermitChecks {
    checked: Mutex<HashMap<String, (NonZeroU32, Instant)>>,
}

impl PermitChecks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (NonZeroU32, Instant)>> {
        self.checked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether queuing a permit of `permits` in `dir` lists the queue to check N.
    pub(crate) fn due(&self, dir: &str, permits: NonZeroU32) -> bool {
        self.lock().get(dir).is_none_or(|&(checked, at)| checked != permits || at.elapsed() > CHECK_EVERY)
    }

    /// Records that a listing of `dir` agreed with `permits`.
    fn checked(&self, dir: &str, permits: NonZeroU32) {
        let mut checked = self.lock();
        if checked.len() >= 256 {
            checked.retain(|_, (_, at)| at.elapsed() <= CHECK_EVERY);
        }
        checked.insert(dir.to_owned(), (permits, Instant::now()));
    }

    /// Forgets `dir`: a listing showed another N there.
    fn forget(&self, dir: &str) {
        self.lock().remove(dir);
    }
}

/// What a permit's release needs to know of its hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PermitHold {
    pub(crate) permits: NonZeroU32,
    /// The directory's data version its queuing wrote.
    pub(crate) dir_version: Option<i32>,
}

impl PermitHold {
    /// The hold of `place`, if it is a permit.
    pub(crate) fn of(place: &Place) -> Option<PermitHold> {
        let permits = place.recipe.permits()?;
        Some(PermitHold { permits, dir_version: place.dir_version })
    }
}

/// How long the waiter first in line waits for its doorbell before it watches the holders: a tenth
/// of the session timeout, 50 ms to 1 s.
fn patience(session: &ZkSession) -> Duration {
    (session.timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// The count of the queuing multi, if it stands alone: no listing came with it (a listing is
/// exact, and checks N).
fn counted_only(queued: &Queued) -> Option<usize> {
    queued.ahead_at_queuing.filter(|_| queued.first_listing.is_none())
}

/// Where we stand at queuing: the count of the queuing multi, unless a listing came with it.
async fn ahead_at_queuing(queued: &mut Queued, permits: NonZeroU32) -> Result<usize, LockError> {
    match counted_only(queued) {
        Some(ahead) => Ok(ahead),
        None => standing(queued, permits).await,
    }
}

/// How many permit znodes are ahead of ours now (a listing, which checks N).
async fn standing(queued: &mut Queued, permits: NonZeroU32) -> Result<usize, LockError> {
    let (position, _) = queued.position().await?;
    queued.place.session.permit_checks.checked(&queued.dir, permits);
    Ok(position)
}

/// The place, granted (by its doorbell, or by the count ahead).
fn granted(mut queued: Queued, marked: bool) -> Place {
    queued.place.marked = marked;
    queued.cleanup.armed = false;
    tracing::info!(lock = %queued.place.name, token = queued.place.czxid, marked, "hand-off: permit granted");
    queued.place
}

/// Whether our doorbell was rung (before the mailbox was watched, or while its events may have
/// been lost): its data version is past the create's.
async fn doorbell_rung(place: &Place) -> Result<bool, LockError> {
    let own = place.path.rsplit('/').next().unwrap_or_default();
    let Some(doorbell) = permit_doorbell(&place.session.config.chroot, own) else { return Ok(false) };
    let stat = super::stat(&place.session, &doorbell, "look at our permit's doorbell").await?;
    Ok(stat.is_some_and(|stat| stat.version > 0))
}

/// The next thing the inbox hears; never, without one.
async fn next(inbox: &mut Option<Inbox>) -> Heard {
    match inbox {
        Some(inbox) => inbox.next().await,
        None => std::future::pending().await,
    }
}

/// Waits until the permit is granted (see the module's comment).
pub(crate) async fn wait(mut queued: Queued, permits: NonZeroU32) -> Result<Place, LockError> {
    let n = permits.get() as usize;
    let session = queued.place.session.clone();
    let mut ahead = ahead_at_queuing(&mut queued, permits).await?;
    if ahead < n {
        return Ok(granted(queued, false));
    }
    let own = queued.place.path.rsplit('/').next().unwrap_or_default().to_owned();
    let mut inbox = None;
    if let Some(doorbell) = crate::layout::permit_doorbell_name(&own) {
        let (registered, watching) = session.mailbox.register(&session, doorbell).await;
        if watching == Watching::Opened && doorbell_rung(&queued.place).await? {
            return Ok(granted(queued, true));
        }
        inbox = (watching != Watching::Not).then_some(registered);
    }
    loop {
        if ahead < n {
            let marked = inbox.as_ref().is_some_and(|i| i.last() == Heard::Granted);
            return Ok(granted(queued, marked));
        }
        let first_in_line = ahead == n;
        let wait_for = match (&inbox, first_in_line) {
            (None, true) => Duration::ZERO,
            (Some(_), true) => patience(&session),
            (_, false) => session.timeout,
        };
        tracing::debug!(lock = %queued.place.name, token = queued.place.czxid, ahead, first_in_line, by_mailbox = inbox.is_some(), "waiting for a permit");
        tokio::select! {
            biased;
            _ = session.life.ended() => {
                return Err(LockError::SessionExpired { during: format!("waiting for a permit of {:?}", queued.place.name.as_str()) });
            }
            heard = next(&mut inbox) => match heard {
                Heard::Granted => return Ok(granted(queued, true)),
                Heard::Missed if doorbell_rung(&queued.place).await? => return Ok(granted(queued, true)),
                Heard::Missed => ahead = standing(&mut queued, permits).await?,
                Heard::First | Heard::Nothing => {}
            },
            _ = tokio::time::sleep(wait_for) => {
                if first_in_line {
                    // Nothing heard: a holder may have gone without a word.
                    if let Some(marked) = watch_holders(&queued, &mut inbox, ahead).await? {
                        return Ok(granted(queued, marked));
                    }
                }
                ahead = standing(&mut queued, permits).await?;
            }
        }
    }
}

/// The waiter first in line watches the holders ([`wait::any_ahead_gone`]), still listening to
/// its mailbox: `Some(rung)` once granted (by its doorbell or by a holder's going), `None` if the
/// listing showed it is not first in line.
async fn watch_holders(queued: &Queued, inbox: &mut Option<Inbox>, ahead: usize) -> Result<Option<bool>, LockError> {
    let gone = wait::any_ahead_gone(&queued.place, &queued.dir, ahead);
    tokio::pin!(gone);
    loop {
        tokio::select! {
            biased;
            heard = next(inbox) => {
                if heard == Heard::Granted {
                    return Ok(Some(true));
                }
            }
            woken = &mut gone => {
                let marked = inbox.as_ref().is_some_and(|i| i.last() == Heard::Granted);
                return Ok((woken? == Woken::First).then_some(marked));
            }
        }
    }
}

/// The place if a permit is free at once; else leaves the queue ([`leave`]) and returns `None`.
pub(crate) async fn first_or_leave(mut queued: Queued, permits: NonZeroU32) -> Result<Option<Place>, LockError> {
    let counted_only = counted_only(&queued).is_some();
    let mut ahead = ahead_at_queuing(&mut queued, permits).await?;
    if ahead >= permits.get() as usize && counted_only {
        // The count includes znodes of other recipes under the same name: the listing is exact.
        ahead = standing(&mut queued, permits).await?;
    }
    if ahead < permits.get() as usize {
        return Ok(Some(granted(queued, false)));
    }
    queued.cleanup.armed = false;
    leave(&queued.place.session, &queued.place.path, permits).await?;
    Ok(None)
}

/// How the release's multi went.
enum Deleted {
    /// Our znode is gone by it; the directory's children changes right after, and the
    /// directory's children with its changes as the listing pipelined behind the multi read them.
    Now(Option<ChildChanges>, Option<(Vec<String>, ChildChanges)>),
    /// Our znode was gone already (a retried release whose first reply was lost).
    Before,
    /// The directory changed since the version given (someone queued): the contended way.
    NotAlone,
    /// Our doorbell was not there: without it.
    NoDoorbell,
}

/// Deletes our znode and its doorbell, and either checks that the directory's data version is
/// still `alone` (nobody queued since), or writes the directory's data to learn its child
/// changes and, with `list`, lists the directory, pipelined behind the multi (one round trip).
async fn delete_own(
    session: &ZkSession,
    path: &str,
    doorbell: Option<&str>,
    alone: Option<i32>,
    list: bool,
) -> Result<Deleted, LockError> {
    session
        .request("release or leave a permit", |client| {
            let (path, doorbell) = (path.to_owned(), doorbell.map(str::to_owned));
            async move {
                let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
                let mut multi = client.new_multi_writer();
                multi.add_delete(&path, None)?;
                if let Some(doorbell) = &doorbell {
                    multi.add_delete(doorbell, None)?;
                }
                match alone {
                    Some(version) => multi.add_check_version(&dir, version)?,
                    None => multi.add_set_data(&dir, b"", None)?,
                }
                let last = 1 + usize::from(doorbell.is_some());
                let committed = multi.commit();
                // On the wire right behind the multi (the client orders requests as they are made).
                let listed = (alone.is_none() && list).then(|| {
                    session.count();
                    client.get_children(&dir)
                });
                let committed = committed.await;
                let listed = match listed {
                    Some(listed) => listed.await.ok().map(|(children, stat)| (children, ChildChanges::of(&stat))),
                    None => None,
                };
                match committed {
                    Ok(results) => {
                        let changes = results.into_iter().find_map(|r| match r {
                            MultiWriteResult::SetData { stat } => Some(ChildChanges::of(&stat)),
                            _ => None,
                        });
                        Ok(Deleted::Now(changes, listed))
                    }
                    Err(MultiWriteError::OperationFailed { index: 0, source: ZkError::NoNode }) => Ok(Deleted::Before),
                    Err(MultiWriteError::OperationFailed { index: 1, source: ZkError::NoNode })
                        if doorbell.is_some() =>
                    {
                        Ok(Deleted::NoDoorbell)
                    }
                    Err(MultiWriteError::OperationFailed { index, source: ZkError::BadVersion }) if index == last => {
                        Ok(Deleted::NotAlone)
                    }
                    Err(e) => Err(ZkError::from(e)),
                }
            }
        })
        .await
}

/// The children of `dir` as listed now, with the directory's child changes.
async fn list_children(session: &ZkSession, dir: &str) -> Result<(Vec<String>, ChildChanges), LockError> {
    session
        .request("list the semaphore's queue", |client| {
            let dir = dir.to_owned();
            async move {
                match client.get_children(&dir).await {
                    Ok((children, stat)) => Ok((children, ChildChanges::of(&stat))),
                    Err(ZkError::NoNode) => Ok((Vec::new(), ChildChanges::default())),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

/// What a directory's stat tells of its children's changes: `cversion` counts every creation
/// and deletion of a child, `numChildren` the creations less the deletions, so the two give the
/// deletions so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ChildChanges {
    cversion: i32,
    children: i32,
}

impl ChildChanges {
    fn of(stat: &zookeeper_client::Stat) -> Self {
        ChildChanges { cversion: stat.cversion, children: stat.num_children }
    }

    /// How many children were deleted between `self` and the `later` stat of the same
    /// directory; `None` if they do not add up (the directory made anew in between).
    fn deletions_until(self, later: ChildChanges) -> Option<usize> {
        let deleted = |c: ChildChanges| i64::from(c.cversion) - i64::from(c.children);
        let twice = deleted(later) - deleted(self);
        (twice >= 0 && twice % 2 == 0).then_some((twice / 2) as usize)
    }
}

/// The queue among `children` of a directory for permits of `permits`, in queue order; a
/// permit of another N there makes the session check N again at its next queuing.
fn permit_queue(session: &ZkSession, dir: &str, children: Vec<String>, permits: NonZeroU32) -> Vec<String> {
    let queue = queue_order(children, Some(distlock_core::backend::Recipe::Permit(permits)));
    let agrees = queue.iter().all(|child| match crate::layout::recipe_of(child) {
        Some(distlock_core::backend::Recipe::Permit(queued)) => queued == permits,
        _ => true,
    });
    if !agrees {
        session.permit_checks.forget(dir);
    }
    queue
}

/// A permit's release, or a waiter's leaving: deletes our znode and its doorbell, then rings
/// the doorbells of the waiters our going admitted (see the module's comment).
pub(crate) async fn release(session: &ZkSession, path: &str, hold: PermitHold) -> Result<(), LockError> {
    let (dir, child) = path.rsplit_once('/').unwrap_or(("", path));
    let mut doorbell = permit_doorbell(&session.config.chroot, child);
    let mut alone = hold.dir_version.filter(|_| !session.contention.met_others(dir));
    let list = session.permits_admitting.met_others(dir);
    let deleted = loop {
        match delete_own(session, path, doorbell.as_deref(), alone, list).await? {
            Deleted::NoDoorbell => doorbell = None,
            Deleted::NotAlone => {
                session.contention.record(dir, false);
                alone = None;
            }
            Deleted::Now(..) if alone.is_some() => {
                session.contention.record(dir, true);
                return Ok(());
            }
            other => break other,
        }
    };
    let (ours, listed) = match deleted {
        Deleted::Now(ours, listed) => (ours, listed),
        _ => (None, None),
    };
    let n = hold.permits.get() as usize;
    // Fewer than N znodes of any kind left: our going admitted nobody.
    let admitted = ours.is_none_or(|ours| ours.children as usize >= n);
    session.permits_admitting.record(dir, !admitted);
    if !admitted {
        return Ok(());
    }
    let (children, listed_at) = match listed {
        Some(listed) => listed,
        None => list_children(session, dir).await?,
    };
    // Every deletion between ours and the listing moved the waiter ours admitted one place
    // ahead at most. Without our stat (a retried release), any of the first N may be it.
    let moved = ours.and_then(|ours| ours.deletions_until(listed_at)).unwrap_or(n);
    let queue = permit_queue(session, dir, children, hold.permits);
    let doorbells: Vec<String> = queue
        .iter()
        .take(n)
        .skip((n - 1).saturating_sub(moved))
        .filter_map(|waiter| permit_doorbell(&session.config.chroot, waiter))
        .collect();
    if let Err(error) = ring(session, doorbells).await {
        // Our znode is gone: the release is done. The waiters it admitted find out by their
        // fallbacks.
        tracing::warn!(%path, %error, "the doorbells of the permits a release admitted could not be rung");
    }
    Ok(())
}

/// Rings `doorbells` (a setData `granted` on each, in one multi). A doorbell gone (its waiter
/// left) is left out and the rest rung again.
async fn ring(session: &ZkSession, mut doorbells: Vec<String>) -> Result<(), LockError> {
    while !doorbells.is_empty() {
        let rung = session
            .request("ring the doorbells of admitted permits", |client| {
                let doorbells = doorbells.clone();
                async move {
                    let mut multi = client.new_multi_writer();
                    for doorbell in &doorbells {
                        multi.add_set_data(doorbell, distlock_core::backend::GRANTED, None)?;
                    }
                    match multi.commit().await {
                        Ok(_) => Ok(None),
                        Err(MultiWriteError::OperationFailed { index, source: ZkError::NoNode }) => Ok(Some(index)),
                        Err(e) => Err(ZkError::from(e)),
                    }
                }
            })
            .await?;
        match rung {
            None => {
                tracing::debug!(rung = doorbells.len(), "permit doorbells rung");
                return Ok(());
            }
            Some(gone) if gone < doorbells.len() => {
                doorbells.remove(gone);
            }
            Some(_) => return Ok(()),
        }
    }
    Ok(())
}

/// A waiter's leaving: as a release (it rings whoever its going admits, which is nobody unless
/// it was admitted itself).
pub(crate) async fn leave(session: &ZkSession, path: &str, permits: NonZeroU32) -> Result<(), LockError> {
    release(session, path, PermitHold { permits, dir_version: None }).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use distlock_core::backend::{EntryRequest, Recipe};
    use distlock_core::LockName;

    use super::*;
    use crate::queue::enqueue;
    use crate::session::shared_test_session;

    const BOUND: Duration = Duration::from_secs(10);

    fn permits(n: u32) -> (NonZeroU32, EntryRequest) {
        let permits = NonZeroU32::new(n).expect("not zero");
        (permits, EntryRequest { recipe: Recipe::Permit(permits), value: Vec::new() })
    }

    fn unique_name() -> LockName {
        LockName::new(&format!("permit-{}/sem", uuid::Uuid::new_v4())).expect("a name")
    }

    /// A permit of `session`, granted at once.
    async fn take(session: &Arc<ZkSession>, name: &LockName, n: u32) -> Place {
        let (permits, request) = permits(n);
        let queued = enqueue(session.clone(), name, &request).await.expect("queued");
        first_or_leave(queued, permits).await.expect("asked").expect("a permit free at once")
    }

    async fn give_back(place: Place) {
        let hold = PermitHold::of(&place).expect("a permit");
        release(&place.session, &place.path, hold).await.expect("released");
    }

    /// On a real ZooKeeper: a contended grant costs the waiter its queuing alone (its mailbox
    /// watched already) and the releaser its multi, its listing and the ring of the waiter's
    /// doorbell; the waiter's release deletes the doorbell.
    #[tokio::test]
    async fn a_contended_grant_is_the_queuing_and_the_releasers_three_requests() {
        let name = unique_name();
        let (holder, other, waiter) =
            (shared_test_session().await, shared_test_session().await, shared_test_session().await);
        let (two, request) = permits(2);
        let mut held = vec![take(&holder, &name, 2).await, take(&other, &name, 2).await];
        for round in 0..2 {
            let before = waiter.requests();
            let queued = enqueue(waiter.clone(), &name, &request).await.expect("queued");
            let queuing = waiter.requests() - before;
            let waiting = tokio::spawn(wait(queued, two));
            let (releaser, place) = (held[0].session.clone(), held.remove(0));
            let released_from = releaser.requests();
            give_back(place).await;
            if round == 1 {
                // In round 0 the first holder met nobody at its queuing (it tries the version
                // first).
                assert_eq!(releaser.requests() - released_from, 3, "the releaser's multi, its listing and the ring");
            }
            let granted =
                tokio::time::timeout(BOUND, waiting).await.expect("granted in time").expect("task").expect("wait");
            assert!(granted.marked, "granted by its doorbell");
            let doorbell = permit_doorbell(&waiter.config.chroot, granted.path.rsplit('/').next().unwrap_or_default())
                .expect("a permit names its session");
            let (rung, _) = waiter.test_client().get_data(&doorbell).await.expect("the doorbell is there");
            assert_eq!(rung, distlock_core::backend::GRANTED);
            if round == 1 {
                // The mailbox was watched in round 0: nothing from the waiter but its queuing.
                assert_eq!(waiter.requests() - before, queuing, "no request between the queuing and the grant");
            }
            let session = granted.session.clone();
            let path = granted.path.clone();
            give_back(granted).await;
            assert!(
                waiter.test_client().check_stat(&doorbell).await.expect("stat").is_none(),
                "its release deleted it"
            );
            assert!(session.test_client().check_stat(&path).await.expect("stat").is_none());
            held.push(take(&holder, &name, 2).await);
        }
        for place in held {
            give_back(place).await;
        }
    }

    /// The deletions between two stats of a directory, from cversion (creations and deletions)
    /// and numChildren (creations less deletions).
    #[test]
    fn deletions_between_two_stats_are_counted_apart_from_creations() {
        let at = |cversion, children| ChildChanges { cversion, children };
        // 3 created, 1 deleted (ours) → then 2 created and 1 deleted.
        assert_eq!(at(4, 2).deletions_until(at(7, 3)), Some(1));
        assert_eq!(at(4, 2).deletions_until(at(4, 2)), Some(0));
        assert_eq!(at(4, 2).deletions_until(at(6, 4)), Some(0), "creations alone move nobody");
        assert_eq!(at(40, 2).deletions_until(at(0, 0)), None, "a directory made anew");
        assert_eq!(at(4, 2).deletions_until(at(5, 2)), None, "does not add up");
    }

    /// On a real ZooKeeper: a session alone under a semaphore takes and gives back a permit in
    /// two requests, the queuing multi and the release multi (checked against the version its
    /// queuing wrote).
    #[tokio::test]
    async fn an_uncontended_permit_is_two_requests() {
        let name = unique_name();
        let session = shared_test_session().await;
        give_back(take(&session, &name, 3).await).await;
        let before = session.requests();
        give_back(take(&session, &name, 3).await).await;
        assert_eq!(session.requests() - before, 2);
    }

    /// On a real ZooKeeper: a session whose permit mailbox was deleted by hand (its keeper, then
    /// the container) makes it again at its next queuing, and that permit is still rung.
    #[tokio::test]
    async fn a_mailbox_deleted_by_hand_is_made_again_at_the_next_queuing() {
        let name = unique_name();
        let (holder, waiter) = (shared_test_session().await, shared_test_session().await);
        let (one, request) = permits(1);
        give_back(take(&waiter, &name, 1).await).await;
        let mailbox = waiter.own_mailbox();
        let client = waiter.test_client();
        client.delete(&format!("{mailbox}/session"), None).await.expect("the keeper deleted");
        match client.delete(&mailbox, None).await {
            Ok(()) | Err(ZkError::NoNode) => {}
            Err(e) => panic!("deleting the mailbox: {e}"),
        }
        let held = take(&holder, &name, 1).await;
        let queued = enqueue(waiter.clone(), &name, &request).await.expect("queued, the mailbox made again");
        assert!(client.check_stat(&format!("{mailbox}/session")).await.expect("stat").is_some(), "a keeper again");
        let waiting = tokio::spawn(wait(queued, one));
        give_back(held).await;
        let granted =
            tokio::time::timeout(BOUND, waiting).await.expect("granted in time").expect("task").expect("wait");
        assert!(granted.marked, "granted by its doorbell");
        give_back(granted).await;
    }

    /// On a real ZooKeeper: a waiter that leaves after a release granted it (its doorbell rung, its
    /// wait given up before it heard) hands its permit on to the waiter behind it.
    #[tokio::test]
    async fn a_waiter_granted_as_it_leaves_hands_the_permit_on() {
        let name = unique_name();
        let (holder, leaver, last) =
            (shared_test_session().await, shared_test_session().await, shared_test_session().await);
        let (one, request) = permits(1);
        let held = take(&holder, &name, 1).await;
        let leaving = enqueue(leaver.clone(), &name, &request).await.expect("queued");
        let behind = tokio::spawn(wait(enqueue(last.clone(), &name, &request).await.expect("queued"), one));
        // The release rings the leaver's doorbell; the leaver has not heard it and leaves.
        give_back(held).await;
        leave(&leaver, &leaving.place.path, one).await.expect("left");
        let mut leaving = leaving;
        leaving.cleanup.armed = false;
        let granted = tokio::time::timeout(BOUND, behind).await.expect("granted in time").expect("task").expect("wait");
        assert!(granted.marked, "handed on by the leaver's ring, not by a fallback");
        give_back(granted).await;
    }
}
