//! A session's mailbox for its waiting permits ([`crate::layout::permit_mailbox`]): one watch
//! on the session's mailbox prefix, opened at its first permit wait and kept for the session's
//! life, whose puts are routed to the waiting permit they name (by its key's create revision),
//! through the routing both backends share ([`distlock_core::backend::PermitMailbox`]).
//!
//! A releasing permit holder puts `granted` for the waiter its release admits and `first` for
//! the waiter first in line after it ([`crate::queue`]'s permit hand-on). The waiter thus hears
//! its grant on a watch it already has: no watch to open and no read per grant.
//!
//! A stream that breaks is re-opened from the first revision it had not covered, so nothing is
//! missed; where that fails (a history compacted meanwhile, a refused watch), every registered
//! waiter hears [`Heard::Missed`] and waits by watches instead ([`crate::queue`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

pub(crate) use distlock_core::backend::Watching;
use distlock_core::backend::{Heard, MailboxWatch, PermitMailbox as Routes};
use etcd_client::{EventType, WatchFilterType, WatchOptions};
use tokio::time::Instant;

use crate::session::EtcdSession;
use crate::watch::open_retrying;

pub(crate) use distlock_core::backend::{Inbox as MarkInbox, FIRST, GRANTED};

/// A waiting permit's registration, by its key's create revision.
pub(crate) type Inbox = MarkInbox<i64>;

/// How long a session goes without its mailbox after its watch went unconfirmed.
const UNWATCHED_FOR: Duration = Duration::from_secs(60);

/// The session's mailbox (see the module's comment).
#[derive(Default)]
pub(crate) struct PermitMailbox {
    routes: Arc<Routes<i64>>,
}

impl PermitMailbox {
    /// Records that the server refused the session a write to its mailbox (a role not granted
    /// it): later waiters wait by watches without asking again.
    pub(crate) fn refuse(&self) {
        self.routes.refuse();
    }

    /// Registers the permit whose key was created at `revision`, making sure the session's
    /// mailbox is watched.
    ///
    /// Cancel safe: a call dropped while the watch opens closes that watch, and the next waiter
    /// opens it.
    pub(crate) async fn register(&self, session: &Arc<EtcdSession>, revision: i64) -> (Inbox, Watching) {
        let (inbox, watch) = self.routes.register(revision);
        match watch {
            MailboxWatch::Refused => return (inbox, Watching::Not),
            MailboxWatch::Running => return (inbox, Watching::Already),
            MailboxWatch::ToOpen => {}
        }
        let prefix = session.config.permit_mailbox(session.lease);
        let Some((watch, created_at)) =
            open_retrying(session, &prefix, options(), within_request_timeout(session)).await
        else {
            tracing::warn!(%prefix, "the permit mailbox's watch was not confirmed (is the role granted it?): permits wait by watches for a while");
            self.routes.refuse_for(UNWATCHED_FOR);
            return (inbox, Watching::Not);
        };
        if self.routes.opened() {
            tokio::spawn(follow(Arc::downgrade(session), self.routes.clone(), prefix, watch, created_at));
        }
        // Else another waiter's watch was confirmed first; ours closes as it drops.
        (inbox, Watching::Opened)
    }
}

/// Routes the mailbox's puts to the waiters while the session lives. A broken stream is
/// re-opened from the first revision not yet covered; if that fails, or the history was
/// compacted or the watch refused, every waiter hears [`Heard::Missed`] and the next waiter to
/// register opens the watch again.
async fn follow(
    session: Weak<EtcdSession>,
    routes: Arc<Routes<i64>>,
    prefix: String,
    mut watch: crate::watch_hub::HubWatch,
    mut covered: i64,
) {
    loop {
        let mut lost = false;
        while let Some(response) = watch.message().await {
            if response.compact_revision() > 0 || response.canceled() {
                lost = true;
                break;
            }
            for event in response.events() {
                let Some(kv) = event.kv().filter(|_| event.event_type() == EventType::Put) else { continue };
                let revision =
                    kv.key_str().ok().and_then(|k| k.strip_prefix(prefix.as_str())).and_then(|r| r.parse().ok());
                if let (Some(revision), Some(heard)) = (revision, Heard::of_mark(kv.value())) {
                    tracing::debug!(revision, ?heard, "permit mailbox: mark heard");
                    routes.deliver(revision, heard);
                }
            }
            covered = covered.max(response.header().map(|h| h.revision()).unwrap_or_default());
        }
        let reopened = match session.upgrade().filter(|s| !s.life.is_ended()) {
            Some(live) if !lost => {
                let from_covered = options().with_start_revision(covered + 1);
                open_retrying(&live, &prefix, from_covered, within_request_timeout(&live)).await
            }
            _ => None,
        };
        match reopened {
            Some((reopened, created_at)) => {
                tracing::debug!(%prefix, covered, "permit mailbox: watch re-opened after a broken stream");
                watch = reopened;
                covered = covered.max(created_at);
            }
            None => {
                routes.watch_lost();
                return;
            }
        }
    }
}

/// The mailbox's watch is tried for up to the request timeout: etcd answers a watch it refuses
/// under an id of -1, which no watch of ours awaits, so a refused watch ends unconfirmed.
fn within_request_timeout(session: &EtcdSession) -> Option<Instant> {
    Some(Instant::now() + session.config.request_timeout)
}

/// The mailbox's watch: its puts (a waiter's release deletes its mark; nobody waits for that).
fn options() -> WatchOptions {
    WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoDelete])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `inbox` hears next, within 10 s.
    async fn heard(inbox: &mut Inbox) -> Heard {
        tokio::time::timeout(Duration::from_secs(10), inbox.next()).await.expect("a mark heard in time")
    }

    /// On a real etcd: a waiting permit hears the marks put in its session's mailbox for its
    /// revision, a grant stays heard, and a mark put before the waiter registered is kept for it.
    #[tokio::test]
    async fn a_waiter_hears_its_marks_and_those_that_came_before_it() {
        let (session, client) = crate::session::shared_test_session().await;
        let kv = client.kv_client();
        let put = |revision: i64, mark: &'static [u8]| {
            let (mut kv, at) = (kv.clone(), session.config.permit_mark(session.lease, revision));
            async move { kv.put(at, mark, None).await.expect("a mark") }
        };
        let (mut inbox, watching) = session.mailbox.register(&session, 1_000_001).await;
        assert_eq!(watching, Watching::Opened, "the first waiter opens the mailbox's watch");
        put(1_000_002, FIRST).await;
        put(1_000_001, FIRST).await;
        assert_eq!(heard(&mut inbox).await, Heard::First, "marked first in line; another's mark not heard");
        put(1_000_001, GRANTED).await;
        assert_eq!(heard(&mut inbox).await, Heard::Granted);
        put(1_000_001, FIRST).await;
        assert_eq!(inbox.last(), Heard::Granted, "a grant is not taken back by a later `first`");
        // A mark for a waiter not yet registered, then one for a registered waiter: once that
        // one is heard, the first was routed (one watch, in order), and is kept.
        let (mut witness, _) = session.mailbox.register(&session, 1_000_004).await;
        put(1_000_003, GRANTED).await;
        put(1_000_004, FIRST).await;
        assert_eq!(heard(&mut witness).await, Heard::First);
        let (later, watching) = session.mailbox.register(&session, 1_000_003).await;
        assert_eq!(watching, Watching::Already);
        assert_eq!(later.last(), Heard::Granted, "a mark that came before its waiter registered");
        let clear = Some(etcd_client::DeleteOptions::new().with_prefix());
        kv.clone().delete(session.config.permit_mailbox(session.lease), clear).await.expect("clear the mailbox");
    }
}
