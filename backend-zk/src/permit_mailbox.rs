//! A session's mailbox for its waiting permits ([`crate::layout::permit_mailbox`]): one
//! persistent recursive watch on the session's mailbox path, set at its first permit wait and
//! kept for the session's life, on a container that an ephemeral child of the session keeps
//! while it lives ([`keep_mailbox`]). Each waiting permit has a doorbell there, made by its
//! queuing; a release that admits it writes `granted` to it ([`crate::queue::permits`]), and the
//! watch's NodeDataChanged event is routed to that waiting permit through the routing both
//! backends share ([`distlock_core::backend::PermitMailbox`]). The waiter thus hears its grant
//! on a watch it already has: no watch to set and no read per grant.
//!
//! ZooKeeper can drop a persistent watch's events while the client reconnects (ZOOKEEPER-4698):
//! after a reconnection every registered waiter hears [`Heard::Missed`] and reads its doorbell.
//! The watch needs ZooKeeper 3.6 or later; where it is refused, waiters wait by watches.

use std::sync::Arc;
use std::time::Duration;

pub(crate) use distlock_core::backend::Watching;
use distlock_core::backend::{Heard, MailboxWatch, PermitMailbox as Routes};
use zookeeper_client::{Acls, AddWatchMode, CreateMode, Error as ZkError, EventType, PersistentWatcher, SessionState};

use crate::session::ZkSession;

/// A waiting permit's registration, by its znode's name.
pub(crate) type Inbox = distlock_core::backend::Inbox<String>;

/// How long a session goes without its mailbox after its watch was refused.
const UNWATCHED_FOR: Duration = Duration::from_secs(60);

/// The session's mailbox (see the module's comment).
#[derive(Default)]
pub(crate) struct PermitMailbox {
    routes: Arc<Routes<String>>,
    /// Whether the mailbox was made (with its keeper).
    kept: std::sync::atomic::AtomicBool,
}

impl PermitMailbox {
    /// Makes sure the session's mailbox exists (once per session), so that a queuing multi can
    /// create a doorbell in it: `false` if it could not be made (the permit then has none).
    pub(crate) async fn kept(&self, session: &ZkSession) -> bool {
        if self.kept.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let kept = keep_mailbox(session, &session.own_mailbox()).await.is_ok();
        self.kept.store(kept, std::sync::atomic::Ordering::Relaxed);
        kept
    }

    /// Registers the permit whose doorbell is named `doorbell`, making sure the session's
    /// mailbox is watched.
    ///
    /// Cancel safe: a call dropped while the watch is set leaves it unset, and the next waiter
    /// sets it.
    pub(crate) async fn register(&self, session: &Arc<ZkSession>, doorbell: &str) -> (Inbox, Watching) {
        let (inbox, watch) = self.routes.register(doorbell.to_owned());
        match watch {
            MailboxWatch::Refused => return (inbox, Watching::Not),
            MailboxWatch::Running => return (inbox, Watching::Already),
            MailboxWatch::ToOpen => {}
        }
        let path = session.own_mailbox();
        let watched = session
            .request("watch the permit mailbox", |client| {
                let path = path.clone();
                async move { client.watch(&path, AddWatchMode::PersistentRecursive).await }
            })
            .await;
        match watched {
            Ok(watcher) => {
                if self.routes.opened() {
                    tokio::spawn(follow(self.routes.clone(), path, watcher));
                }
                (inbox, Watching::Opened)
            }
            Err(error) => {
                tracing::warn!(%path, %error, "the permit mailbox could not be watched (ZooKeeper before 3.6?): permits wait by watches for a while");
                self.routes.refuse_for(UNWATCHED_FOR);
                (inbox, Watching::Not)
            }
        }
    }
}

/// Makes the session's mailbox (a container) with an ephemeral child of the session's, named
/// [`KEEPER`]: the server removes a container once it is empty, which it now is only once the
/// session is gone, so a releaser always finds it.
pub(crate) async fn keep_mailbox(session: &ZkSession, mailbox: &str) -> Result<(), distlock_core::LockError> {
    let keeper = format!("{mailbox}/{KEEPER}");
    session
        .request("make the permit mailbox", |client| {
            let (mailbox, keeper) = (mailbox.to_owned(), keeper.clone());
            async move {
                let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
                match client.create(&keeper, b"", &ephemeral).await {
                    Ok(_) | Err(ZkError::NodeExists) => return Ok(()),
                    Err(ZkError::NoNode) => {}
                    Err(e) => return Err(e),
                }
                match client.mkdir(&mailbox, &CreateMode::Container.with_acls(Acls::anyone_all())).await {
                    Ok(()) | Err(ZkError::NodeExists) => {}
                    Err(e) => return Err(e),
                }
                match client.create(&keeper, b"", &ephemeral).await {
                    Ok(_) | Err(ZkError::NodeExists) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

/// The name of the ephemeral child that keeps a session's mailbox while the session lives
/// (a permit znode's name starts with `_c_`).
const KEEPER: &str = "session";

/// Routes the mailbox's creations to the waiters while the session lives.
async fn follow(routes: Arc<Routes<String>>, mailbox: String, mut watcher: PersistentWatcher) {
    let prefix = format!("{mailbox}/");
    let mut disconnected = false;
    loop {
        let event = watcher.changed().await;
        match event.event_type {
            EventType::NodeDataChanged => {
                if let Some(doorbell) = event.path.strip_prefix(&prefix).filter(|c| !c.contains('/') && *c != KEEPER) {
                    tracing::debug!(%doorbell, "permit mailbox: doorbell rung");
                    routes.deliver(doorbell.to_owned(), Heard::Granted);
                }
            }
            EventType::Session => match event.session_state {
                SessionState::Disconnected => disconnected = true,
                SessionState::SyncConnected | SessionState::ConnectedReadOnly if disconnected => {
                    // Events during the reconnection may be lost (ZOOKEEPER-4698).
                    disconnected = false;
                    routes.tell_all_missed();
                }
                SessionState::Expired | SessionState::Closed | SessionState::AuthFailed => {
                    routes.watch_lost();
                    return;
                }
                _ => {}
            },
            _ => {}
        }
    }
}
