//! The queue every recipe shares, in Apache Curator's layouts ([`crate::layout`]): the queue of
//! `name` is the ephemeral sequential znodes `<chroot>/<name>/_c_<uuid>-<marker><seq>`, ordered
//! by sequence number, each carrying its entry's value as data (a lock's: none; an election's:
//! the candidate's value). The recipe's grant rule decides which entry holds; under the
//! exclusive rule of the lock and the election that is the first, and each waiter watches only
//! the one just before it.
//!
//! The holder's release also writes its znode's name as the lock directory's data, in the multi
//! that deletes the znode. The waiter behind it, seeing that deletion, reads the directory's
//! data (one znode) instead of listing the queue: if it names the deleted znode, the deletion
//! was the holder's own release, so nothing is left before the waiter. A hand-off then costs the
//! server the same at 1,000 waiters as at one.
//!
//! This module queues ([`enqueue`]) and leaves the queue; [`wait`] waits behind the znode the
//! grant rule names, and [`crate::hold`] turns a granted place into a hold.

pub(crate) mod permits;
pub(crate) mod wait;

use std::sync::Arc;

use distlock_core::{
    backend::{EntryRequest, Grant, Recipe},
    FencingToken, LockError, LockName, QueueEntry,
};
use zookeeper_client::{Acls, CreateMode, Error as ZkError, MultiWriteError, MultiWriteResult, Stat};

use crate::layout::{protected_prefix, queue_order};
use crate::place::Place;
use crate::session::ZkSession;
use wait::Woken;

/// Removes a waiter's znode when its acquire is cancelled or fails, in the background, retried
/// until confirmed or the session ends. With no path known (a create whose reply was lost),
/// finds it by the uuid. Until it is done, the same session does not queue under that lock again.
struct NodeCleanup {
    session: Arc<ZkSession>,
    dir: String,
    protected_prefix: String,
    path: Option<String>,
    /// A permit's semaphore size: its znode leaves by [`permits::leave`], which hands its
    /// permit on if it was granted meanwhile.
    permits: Option<std::num::NonZeroU32>,
    armed: bool,
}

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (session, dir, prefix, path, permits) =
            (self.session.clone(), self.dir.clone(), self.protected_prefix.clone(), self.path.clone(), self.permits);
        let entry = path.clone().unwrap_or_else(|| format!("{dir}/{prefix}…"));
        self.session.cleanups.start(&self.dir).retry_until_done(entry, move || {
            let (session, dir, prefix, path) = (session.clone(), dir.clone(), prefix.clone(), path.clone());
            async move {
                let path = match path {
                    Some(path) => Some(path),
                    None => find_own(&session, &dir, &prefix).await?.map(|(path, _)| path),
                };
                match (path, permits) {
                    (Some(path), Some(permits)) => permits::leave(&session, &path, permits).await,
                    (Some(path), None) => delete(&session, &path, "delete a cancelled waiter's znode").await,
                    (None, _) => Ok(()),
                }
            }
        });
    }
}

/// Deletes `path`; a znode already gone (or gone with the session) counts as deleted. The path
/// is unique to one hold, so a retried delete can never remove another's znode.
pub(crate) async fn delete(session: &ZkSession, path: &str, op: &str) -> Result<(), LockError> {
    let result = session
        .request(op, |client| {
            let path = path.to_owned();
            async move {
                match client.delete(&path, None).await {
                    Err(ZkError::NoNode) => Ok(()),
                    other => other,
                }
            }
        })
        .await;
    match result {
        Err(LockError::SessionExpired { .. }) => Ok(()),
        other => other,
    }
}

/// Our own znode in `dir`, found by the uuid in its name (Curator's protected mode). A sync
/// first: after a lost reply the session may have reconnected to a server that has not applied
/// our create yet (the session never saw its zxid, so the server may lag behind it), and a
/// listing there would miss the znode and make us create a second one.
async fn find_own(session: &ZkSession, dir: &str, prefix: &str) -> Result<Option<(String, i64)>, LockError> {
    catch_up(session, dir).await?;
    let children = list(session, dir).await?;
    let Some(child) = children.into_iter().find(|c| c.starts_with(prefix)) else { return Ok(None) };
    let path = format!("{dir}/{child}");
    let stat = stat(session, &path, "read own znode").await?;
    Ok(stat.map(|s| (path, s.czxid)))
}

/// A `sync` of `dir`: the server this session reads from (maybe a follower) applies every
/// change the ensemble's leader had committed when the sync reached it, so the reads that follow
/// see whatever any client saw acknowledged before this call. A missing `dir` is no error.
pub(crate) async fn catch_up(session: &ZkSession, dir: &str) -> Result<(), LockError> {
    session
        .request("catch up with the ensemble's leader", |client| {
            let dir = dir.to_owned();
            async move {
                match client.sync(&dir).await {
                    Ok(()) | Err(ZkError::NoNode) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

/// The stat of the znode at `path`, `None` if it does not exist. `op` says what for, in errors.
pub(crate) async fn stat(session: &ZkSession, path: &str, op: &str) -> Result<Option<Stat>, LockError> {
    session
        .request(op, |client| {
            let path = path.to_owned();
            async move { client.check_stat(&path).await }
        })
        .await
}

/// The children of `dir`; none if it does not exist.
pub(crate) async fn list(session: &ZkSession, dir: &str) -> Result<Vec<String>, LockError> {
    session
        .request("list the lock queue", |client| {
            let dir = dir.to_owned();
            async move {
                match client.get_children(&dir).await {
                    Ok((children, _)) => Ok(children),
                    Err(ZkError::NoNode) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

/// Our znode, just created, and the lock directory's children as listed right after.
struct Created {
    path: String,
    czxid: i64,
    /// `None` if the listing failed or could not be pipelined (then the waiter lists again).
    listing: Option<Vec<String>>,
    /// How many znodes of any kind were before ours, where the create's multi counted them.
    ahead: Option<usize>,
    /// The lock directory's data version that the create's multi wrote.
    dir_version: Option<i32>,
}

/// How one create attempt went.
enum CreateAttempt {
    Created(Created),
    /// The directory's ACL refused us its data: create again without asking whether alone.
    DataRefused,
    /// The session's permit mailbox is gone (deleted by hand), so the doorbell could not be
    /// made: make the mailbox again, then create again.
    MailboxGone,
}

/// Creates our ephemeral sequential znode, making missing parents as container nodes. After a
/// lost connection it looks for its own znode by uuid before creating again: never two.
///
/// Where the session has not met others lately ([`distlock_core::backend::RecentContention`]), the
/// create asks whether it is alone: one multi creates our znode and writes the directory's data
/// (empty, which names no znode), and the directory's stat in the reply counts its children. One
/// child is ours alone: we are first, with no listing. Elsewhere the listing is pipelined: the getChildren is sent right behind
/// the create, without waiting for its reply. ZooKeeper answers one session's requests in the
/// order sent, so the listing already holds our znode, and queuing is one round trip.
///
/// A permit's create always counts (see [`permits`]): it lists too only where the session has
/// not checked the semaphore's number of permits lately.
async fn create_protected(
    session: &ZkSession,
    dir: &str,
    prefix: &str,
    data: &[u8],
    recipe: Recipe,
) -> Result<Created, LockError> {
    let base = format!("{dir}/{prefix}");
    let hosts = session.config.hosts_label();
    let mut parents_made = 0;
    loop {
        if session.life.is_ended() {
            return Err(LockError::SessionExpired { during: format!("queuing in {dir}") });
        }
        let counts = !session.directory_data_refused();
        let attempt = match recipe.permits() {
            Some(permits) if counts => {
                let list = session.permit_checks.due(dir, permits);
                let doorbell = crate::layout::permit_doorbell(&session.config.chroot, prefix);
                create_asking_alone(session, dir, &base, data, list, doorbell.as_deref()).await
            }
            _ if counts && !session.contention.met_others(dir) => {
                create_asking_alone(session, dir, &base, data, false, None).await
            }
            _ => create_and_list(session, dir, &base, data).await,
        };
        match attempt {
            Ok(CreateAttempt::Created(created)) => return Ok(created),
            Ok(CreateAttempt::DataRefused) => session.refuse_directory_data(dir),
            Ok(CreateAttempt::MailboxGone) if parents_made < 5 => {
                parents_made += 1;
                tracing::warn!(dir, "the session's permit mailbox was deleted: making it again");
                crate::permit_mailbox::keep_mailbox(session, &session.own_mailbox()).await?;
            }
            Ok(CreateAttempt::MailboxGone) => {
                return Err(crate::errors::request_error(
                    "create the permit's doorbell in the session's mailbox",
                    &hosts,
                    Some(ZkError::NoNode),
                ))
            }
            Err(ZkError::NoNode) if parents_made < 5 => {
                parents_made += 1;
                session.count();
                let parent = CreateMode::Container.with_acls(Acls::anyone_all());
                let made = async { session.client()?.mkdir(dir, &parent).await }.await;
                match made {
                    Ok(()) | Err(ZkError::NodeExists) => {}
                    Err(e) => return Err(crate::errors::request_error("create the lock directory", &hosts, Some(e))),
                }
            }
            Err(e) if crate::errors::is_ambiguous(&e) => {
                tracing::debug!(%base, error = %e, "create's reply lost: looking for our znode by its uuid");
                if let Some((path, czxid)) = find_own(session, dir, prefix).await? {
                    return Ok(Created { path, czxid, listing: None, ahead: None, dir_version: None });
                }
            }
            Err(e) => {
                return session.end_if_expired(Err(crate::errors::request_error(
                    "create the lock znode",
                    &hosts,
                    Some(e),
                )))
            }
        }
    }
}

/// The options of a lock znode.
pub(crate) fn lock_znode_options() -> zookeeper_client::CreateOptions<'static> {
    CreateMode::EphemeralSequential.with_acls(Acls::anyone_all())
}

/// One create with the listing pipelined behind it (see [`create_protected`]).
async fn create_and_list(session: &ZkSession, dir: &str, base: &str, data: &[u8]) -> Result<CreateAttempt, ZkError> {
    session.count();
    // Both requests are on the wire once their futures exist (the client orders requests when
    // they are made, not when they are polled).
    let client = session.client()?;
    let created = client.create(base, data, &lock_znode_options());
    session.count();
    let listing = client.get_children(dir);
    let (stat, sequence) = created.await?;
    let listing = listing.await.ok().map(|(children, _)| children);
    if let Some(children) = &listing {
        session.contention.record(dir, children.len() == 1);
    }
    let path = format!("{base}{sequence}");
    Ok(CreateAttempt::Created(Created { path, czxid: stat.czxid, listing, ahead: None, dir_version: None }))
}

/// One multi that creates our znode and writes the directory's data, whose reply says how many
/// znodes were before ours (see [`create_protected`]); with `list`, the listing pipelined behind it.
async fn create_asking_alone(
    session: &ZkSession,
    dir: &str,
    base: &str,
    data: &[u8],
    list: bool,
    doorbell: Option<&str>,
) -> Result<CreateAttempt, ZkError> {
    session.count();
    let client = session.client()?;
    let mut multi = client.new_multi_writer();
    multi.add_create(base, data, &lock_znode_options())?;
    multi.add_set_data(dir, b"", None)?;
    if let Some(doorbell) = doorbell {
        multi.add_create(doorbell, b"", &CreateMode::Ephemeral.with_acls(Acls::anyone_all()))?;
    }
    let committed = multi.commit();
    let listing = list.then(|| {
        session.count();
        client.get_children(dir)
    });
    let results = match committed.await {
        Ok(results) => results,
        Err(MultiWriteError::OperationFailed { index: 1, source: ZkError::NoAuth }) => {
            return Ok(CreateAttempt::DataRefused)
        }
        Err(MultiWriteError::OperationFailed { index: 2, source: ZkError::NoNode }) if doorbell.is_some() => {
            return Ok(CreateAttempt::MailboxGone)
        }
        Err(e) => return Err(ZkError::from(e)),
    };
    let listing = match listing {
        Some(listing) => listing.await.ok().map(|(children, _)| children),
        None => None,
    };
    let mut results = results.into_iter();
    let (Some(MultiWriteResult::Create { path, .. }), Some(MultiWriteResult::SetData { stat })) =
        (results.next(), results.next())
    else {
        return Err(ZkError::UnexpectedError("a create-and-setData multi answered with other results".to_owned()));
    };
    // The multi is one transaction: the directory's mzxid is our znode's czxid (the create's own
    // stat can be invalid in a multi, ZOOKEEPER-4026). Our znode is the newest child.
    let own = path.rsplit('/').next().unwrap_or_default().to_owned();
    let ahead = (stat.num_children.max(1) - 1) as usize;
    session.contention.record(dir, ahead == 0);
    let listing = listing.or_else(|| (ahead == 0).then(|| vec![own]));
    Ok(CreateAttempt::Created(Created {
        path,
        czxid: stat.mzxid,
        listing,
        ahead: Some(ahead),
        dir_version: Some(stat.version),
    }))
}

/// A znode in the queue, not yet known to be first. Dropped unconsumed, it is deleted.
pub(crate) struct Queued {
    place: Place,
    dir: String,
    cleanup: NodeCleanup,
    /// The listing pipelined with the create, used once instead of listing again.
    first_listing: Option<Vec<String>>,
    /// How many znodes were before ours at the create, where its multi counted them.
    ahead_at_queuing: Option<usize>,
}

/// Queues `session` for `name`: creates our protected ephemeral sequential znode, named for the
/// request's recipe and carrying its value.
pub(crate) async fn enqueue(
    session: Arc<ZkSession>,
    name: &LockName,
    request: &EntryRequest,
) -> Result<Queued, LockError> {
    let dir = session.config.lock_dir(name.as_str());
    let prefix = match request.recipe.permits() {
        // A doorbell needs the session's mailbox; without one, the permit's name carries no
        // session and it waits by watches.
        Some(permits) if session.mailbox.kept(&session).await => crate::layout::permit_prefix(session.id().0, permits),
        _ => protected_prefix(request.recipe),
    };
    let mut cleanup = NodeCleanup {
        session: session.clone(),
        dir: dir.clone(),
        protected_prefix: prefix.clone(),
        path: None,
        permits: request.recipe.permits(),
        armed: true,
    };
    session.cleanups.wait(&dir, &session.life).await;
    let Created { path, czxid, listing, ahead, dir_version } =
        create_protected(&session, &dir, &prefix, &request.value, request.recipe).await?;
    cleanup.path = Some(path.clone());
    let place = Place { session, name: name.clone(), path, czxid, recipe: request.recipe, dir_version, marked: false };
    Ok(Queued { place, dir, cleanup, first_listing: listing, ahead_at_queuing: ahead })
}

impl Queued {
    /// Our znode as `inspect` lists it.
    pub(crate) fn entry(&self) -> QueueEntry {
        let name = self.place.path.rsplit_once('/').map_or(self.place.path.as_str(), |(_, name)| name);
        QueueEntry {
            owner: name.to_owned(),
            token: FencingToken::new(self.place.czxid as u64),
            since: None,
            kind: self.place.recipe.entry_kind(),
        }
    }

    /// Our znode's place in the current listing (0 = first) and the queue itself. The first
    /// call uses the listing pipelined with the create.
    async fn position(&mut self) -> Result<(usize, Vec<String>), LockError> {
        let listing = match self.first_listing.take() {
            Some(listing) => listing,
            None => list(&self.place.session, &self.dir).await?,
        };
        let place = &self.place;
        let own = place.path.rsplit('/').next().unwrap_or_default();
        let queue = queue_order(listing, Some(place.recipe));
        match queue.iter().position(|c| c == own) {
            Some(position) => {
                place.check_permits(&queue[..position])?;
                Ok((position, queue))
            }
            None => {
                let during = format!("waiting for lock {:?}", place.name.as_str());
                if place.session.life.is_ended() {
                    return Err(LockError::SessionExpired { during });
                }
                Err(LockError::Backend {
                    backend: "zookeeper",
                    op: during,
                    retryable: true,
                    source:
                        "our znode was deleted while waiting (by an operator or the session's expiry); call lock again"
                            .into(),
                })
            }
        }
    }

    /// The place if it is first; else leaves the queue (deleting the znode) and returns `None`.
    pub(crate) async fn first_or_leave(mut self) -> Result<Option<Place>, LockError> {
        if let Some(permits) = self.place.recipe.permits() {
            return permits::first_or_leave(self, permits).await;
        }
        let (position, queue) = self.position().await?;
        if self.place.decide(&queue[..position]) != Grant::Granted {
            delete(&self.place.session, &self.place.path, "leave the queue").await?;
            self.cleanup.armed = false;
            return Ok(None);
        }
        self.cleanup.armed = false;
        Ok(Some(self.place))
    }

    /// Waits until first: watches the znode just before ours, and the one before that
    /// ([`wait`]). If that znode was the owner at the listing (first in the queue), or the
    /// directory's data says it became the owner, its deletion makes us first and nothing is
    /// read then: a znode created later has a higher sequence number, so nothing can appear
    /// before ours. Otherwise the directory's data tells whether the deletion was its holder's
    /// release, which makes us first too; only otherwise is the queue listed again. Every
    /// shortcut also needs the session's lease clock to say the session surely lives (so its
    /// expiry has not taken our znode). A permit waits as [`permits`] says.
    pub(crate) async fn wait_until_first(mut self) -> Result<Place, LockError> {
        if let Some(permits) = self.place.recipe.permits() {
            return permits::wait(self, permits).await;
        }
        loop {
            let (position, queue) = self.position().await?;
            let ahead = queue.get(..position).unwrap_or_default();
            match self.place.decide(ahead) {
                Grant::Granted => break,
                Grant::WaitBehind(blocker) => {
                    if wait::predecessor_gone(&self.place, &self.dir, ahead, blocker).await? == Woken::First {
                        break;
                    }
                }
                Grant::WaitForAnyAhead | Grant::WaitUntilGranted(_) => {
                    return Err(LockError::Backend {
                        backend: "zookeeper",
                        op: format!("waiting for lock {:?}", self.place.name.as_str()),
                        retryable: false,
                        source:
                            "a grant rule for permits outside a permit's wait (a bug in distlock-zk; please report it)"
                                .into(),
                    });
                }
            }
        }
        tracing::info!(lock = %self.place.name, token = self.place.czxid, "hand-off: first in the queue");
        self.cleanup.armed = false;
        Ok(self.place)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::release_as_holder;

    /// Whether the directory's data names `child` (released by its holder).
    async fn released_by_holder(session: &ZkSession, dir: &str, child: &str) -> Result<bool, LockError> {
        let data = wait::last_release(session, dir).await?;
        Ok(wait::names_any(data.as_deref(), [Some(child), None]))
    }
    use zookeeper_client::{Acl, AuthId, Permission};

    /// A fresh lock directory with `acls` on the tests' shared ZooKeeper, and a session.
    async fn lock_dir(acls: Acls<'_>) -> (Arc<ZkSession>, String) {
        let session = crate::session::shared_test_session().await;
        let dir = session.config.lock_dir(&format!("release-{}/job", uuid::Uuid::new_v4()));
        session.test_client().mkdir(&dir, &CreateMode::Persistent.with_acls(acls)).await.expect("the lock directory");
        (session, dir)
    }

    /// A lock znode in `dir`: its path and its name.
    async fn lock_znode(session: &ZkSession, dir: &str) -> (String, String) {
        let base = format!("{dir}/{}", protected_prefix(Recipe::Lock));
        let (_, sequence) =
            session.test_client().create(&base, b"", &lock_znode_options()).await.expect("a lock znode");
        let path = format!("{base}{sequence}");
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        (path, name)
    }

    /// On a real ZooKeeper: a deleted znode counts as released by its holder only if the holder's
    /// release deleted it. A plain deletion (a waiter leaving the queue) after an earlier release
    /// does not, and a release of a znode already gone writes nothing.
    #[tokio::test]
    async fn only_a_holders_release_names_the_deleted_znode() {
        let (session, dir) = lock_dir(Acls::anyone_all()).await;
        let (holder, holder_name) = lock_znode(&session, &dir).await;
        let (middle, middle_name) = lock_znode(&session, &dir).await;
        session.test_client().set_data(&dir, b"an earlier release", None).await.expect("an earlier release");

        session.test_client().delete(&middle, None).await.expect("the middle waiter leaves");
        assert!(!released_by_holder(&session, &dir, &middle_name).await.expect("read"), "a waiter that left");

        release_as_holder(&session, &holder).await.expect("release");
        assert_eq!(session.test_client().check_stat(&holder).await.expect("stat"), None, "the holder's znode is gone");
        assert!(released_by_holder(&session, &dir, &holder_name).await.expect("read"), "the holder's release");

        session.test_client().set_data(&dir, b"a later release", None).await.expect("a later release");
        release_as_holder(&session, &holder).await.expect("a retried release of a znode already gone");
        let (data, _) = session.test_client().get_data(&dir).await.expect("read");
        assert_eq!(data, b"a later release", "a release of a znode already gone writes nothing");
    }

    /// On a real ZooKeeper: in a lock directory whose data another client's ACL keeps us from
    /// writing, the release still deletes the holder's znode (the waiter behind it then lists).
    #[tokio::test]
    async fn a_release_deletes_the_znode_where_the_directory_is_not_ours_to_write() {
        let no_write = [Acl::new(Permission::READ | Permission::CREATE | Permission::DELETE, AuthId::anyone())];
        let (session, dir) = lock_dir(Acls::new(&no_write)).await;
        let (holder, holder_name) = lock_znode(&session, &dir).await;
        release_as_holder(&session, &holder).await.expect("release");
        assert_eq!(session.test_client().check_stat(&holder).await.expect("stat"), None, "the holder's znode is gone");
        assert!(!released_by_holder(&session, &dir, &holder_name).await.expect("read"));
        assert!(session.directory_data_refused(), "later releases go straight to the plain delete");
    }

    /// On a real ZooKeeper: queuing where the session last was alone is one request (the
    /// create-and-setData multi), knows from the directory's stat whether it is alone, and takes
    /// its fencing token from the same transaction. A session that met others lists at once.
    #[tokio::test]
    async fn queuing_alone_is_one_request_that_knows_it_is_first() {
        let (first, dir) = lock_dir(Acls::anyone_all()).await;
        let before = first.requests();
        let created = create_protected(&first, &dir, "_c_first-lock-", b"", Recipe::Lock).await.expect("queue alone");
        assert_eq!(first.requests() - before, 1, "one multi, no listing");
        let own = created.path.rsplit('/').next().unwrap_or_default().to_owned();
        assert_eq!(created.listing, Some(vec![own]), "alone, known without a listing");
        let stat = first.test_client().check_stat(&created.path).await.expect("stat").expect("our znode");
        assert_eq!(created.czxid, stat.czxid, "the token is our znode's czxid");
        assert!(!first.contention.met_others(&dir));

        let second = crate::session::shared_test_session().await;
        let created =
            create_protected(&second, &dir, "_c_second-lock-", b"", Recipe::Lock).await.expect("queue behind");
        assert_eq!(created.listing, None, "not alone: the waiter lists the queue");
        assert!(second.contention.met_others(&dir), "the session met others here");
        let stat = second.test_client().check_stat(&created.path).await.expect("stat").expect("our znode");
        assert_eq!(created.czxid, stat.czxid);

        let before = second.requests();
        let again = create_protected(&second, &dir, "_c_again-lock-", b"", Recipe::Lock).await.expect("queue again");
        assert_eq!(second.requests() - before, 2, "a create with its listing pipelined");
        assert_eq!(again.listing.map(|l| l.len()), Some(3), "the listing holds all three znodes");
    }

    /// On a real ZooKeeper: where the directory's data is not ours to write, queuing alone still
    /// creates exactly one znode (with the listing), and the session stops asking.
    #[tokio::test]
    async fn queuing_where_the_directory_is_not_ours_to_write_creates_one_znode() {
        let no_write = [Acl::new(Permission::READ | Permission::CREATE | Permission::DELETE, AuthId::anyone())];
        let (session, dir) = lock_dir(Acls::new(&no_write)).await;
        let created = create_protected(&session, &dir, "_c_refused-lock-", b"", Recipe::Lock).await.expect("queue");
        let own = created.path.rsplit('/').next().unwrap_or_default().to_owned();
        assert_eq!(created.listing, Some(vec![own]), "listed after the refused multi");
        assert!(session.directory_data_refused(), "the session stops writing the directory's data");
        let (children, _) = session.test_client().get_children(&dir).await.expect("list");
        assert_eq!(children.len(), 1, "exactly one znode");
    }
}
