//! A session's mailbox for its waiting permits ([`crate::layout::permit_mailbox`]): one watch
//! on the session's mailbox prefix, opened at its first permit wait and kept for the session's
//! life, whose puts are routed to the waiting permit they name (by its key's create revision).
//!
//! A releasing permit holder puts `granted` for the waiter its release admits and `first` for
//! the waiter first in line after it ([`crate::queue`]'s permit hand-on). The waiter thus hears
//! its grant on a watch it already has: no watch to open and no read per grant.
//!
//! A mark that comes before its waiter registers is kept (a few hundred at most) until it does.
//! A stream that breaks is re-opened from the first revision it had not covered, so nothing is
//! missed; where that fails (a history compacted meanwhile, a refused watch), every registered
//! waiter hears [`Heard::Missed`] and waits by watches instead ([`crate::queue`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{EventType, WatchFilterType, WatchOptions};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::session::EtcdSession;
use crate::watch::open_retrying;

/// What a permit's mailbox told it, or that it may have missed something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Nothing yet.
    Nothing,
    /// First in line: the next release admits it (nothing is owed to it until then).
    First,
    /// Granted: a release made it one of the first N.
    Granted,
    /// The mailbox's watch lost history or was refused: marks may have gone unheard.
    Missed,
}

impl Heard {
    /// What a mark's value says; `None` for a value no release writes.
    fn of_mark(value: &[u8]) -> Option<Heard> {
        match value {
            GRANTED => Some(Heard::Granted),
            FIRST => Some(Heard::First),
            _ => None,
        }
    }

    /// Whether `self` tells more than `before`: a grant is final, and a missed mark is not made
    /// good by a later `first`.
    fn outranks(self, before: Heard) -> bool {
        let rank = |heard| match heard {
            Heard::Nothing => 0,
            Heard::First => 1,
            Heard::Missed => 2,
            Heard::Granted => 3,
        };
        rank(self) > rank(before)
    }
}

/// The value of a mark that grants its permit.
pub(crate) const GRANTED: &[u8] = b"granted";
/// The value of a mark that makes its permit first in line.
pub(crate) const FIRST: &[u8] = b"first";

/// How long a session goes without its mailbox after its watch went unconfirmed.
const UNWATCHED_FOR: Duration = Duration::from_secs(60);

/// How many marks for no registered waiter are kept: a mark can come before its waiter has
/// registered (the release was faster than the queuing reply), or after it left.
const UNCLAIMED_KEPT: usize = 256;

#[derive(Default)]
struct Routes {
    waiters: HashMap<i64, watch::Sender<Heard>>,
    unclaimed: VecDeque<(i64, Heard)>,
    /// Whether the watch task runs.
    watching: bool,
    /// Whether the session goes without its mailbox (its waiters wait by watches meanwhile).
    refused: Refused,
}

/// Whether, and how long, a session goes without its mailbox.
#[derive(Debug, Default, Clone, Copy)]
enum Refused {
    #[default]
    No,
    /// Until then: its watch went unconfirmed (refused, or a server too slow to answer).
    Until(Instant),
    /// For good: a Txn that wrote a mark was refused (a role not granted the mailboxes).
    ForGood,
}

impl Refused {
    fn in_force(self) -> bool {
        match self {
            Refused::No => false,
            Refused::Until(until) => Instant::now() < until,
            Refused::ForGood => true,
        }
    }
}

impl Routes {
    fn deliver(&mut self, revision: i64, heard: Heard) {
        match self.waiters.get(&revision) {
            Some(waiter) => tell(waiter, heard),
            None => {
                if self.unclaimed.len() == UNCLAIMED_KEPT {
                    self.unclaimed.pop_front();
                }
                self.unclaimed.push_back((revision, heard));
            }
        }
    }

    fn tell_all(&mut self, heard: Heard) {
        for waiter in self.waiters.values() {
            tell(waiter, heard);
        }
    }

    /// Registers `waiter` for `revision`, telling it what came for it before.
    fn register(&mut self, revision: i64, waiter: watch::Sender<Heard>) {
        self.unclaimed.retain(|&(r, heard)| {
            if r == revision {
                tell(&waiter, heard);
            }
            r != revision
        });
        self.waiters.insert(revision, waiter);
    }
}

/// Tells `waiter` what it heard, unless it knows better already.
fn tell(waiter: &watch::Sender<Heard>, heard: Heard) {
    waiter.send_if_modified(|now| {
        let news = heard.outranks(*now);
        if news {
            *now = heard;
        }
        news
    });
}

/// The session's mailbox (see the module's comment).
#[derive(Default)]
pub(crate) struct PermitMailbox {
    routes: Arc<Mutex<Routes>>,
}

/// A waiting permit's registration: what its mailbox tells it. Dropping it unregisters.
pub(crate) struct Inbox {
    revision: i64,
    heard: watch::Receiver<Heard>,
    routes: Arc<Mutex<Routes>>,
}

impl Inbox {
    /// What was heard last (a grant stays heard).
    pub(crate) fn last(&self) -> Heard {
        *self.heard.borrow()
    }

    /// Waits until the mailbox tells something new, and returns it.
    ///
    /// Cancel safe: nothing heard is lost by dropping the future.
    pub(crate) async fn next(&mut self) -> Heard {
        match self.heard.changed().await {
            Ok(()) => *self.heard.borrow_and_update(),
            // The mailbox is gone with the session: the session's end answers the waiter.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        lock(&self.routes).waiters.remove(&self.revision);
    }
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the mailbox's watch was already there when a waiter registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watching {
    /// It was: every mark put after the waiter's queuing reaches it.
    Already,
    /// It was opened now: a mark put before it was confirmed would be unheard, so the waiter
    /// reads its place once.
    Opened,
    /// It could not be opened (refused, or no stream): the waiter must not count on marks.
    Not,
}

impl PermitMailbox {
    /// Records that the server refused the session a write to its mailbox (a role not granted
    /// it): later waiters wait by watches without asking again.
    pub(crate) fn refuse(&self) {
        lock(&self.routes).refused = Refused::ForGood;
    }

    /// Registers the permit whose key was created at `revision`, making sure the session's
    /// mailbox is watched.
    ///
    /// Cancel safe: a call dropped while the watch opens closes that watch, and the next waiter
    /// opens it.
    pub(crate) async fn register(&self, session: &Arc<EtcdSession>, revision: i64) -> (Inbox, Watching) {
        let (sender, heard) = watch::channel(Heard::Nothing);
        let watching = {
            let mut routes = lock(&self.routes);
            routes.register(revision, sender);
            match *routes {
                Routes { refused, .. } if refused.in_force() => Some(Watching::Not),
                Routes { watching: true, .. } => Some(Watching::Already),
                _ => None,
            }
        };
        let inbox = Inbox { revision, heard, routes: self.routes.clone() };
        if let Some(watching) = watching {
            return (inbox, watching);
        }
        let prefix = session.config.permit_mailbox(session.lease);
        let Some((watch, created_at)) =
            open_retrying(session, &prefix, options(), within_request_timeout(session)).await
        else {
            tracing::warn!(%prefix, "the permit mailbox's watch was not confirmed (is the role granted it?): permits wait by watches for a while");
            lock(&self.routes).refused = Refused::Until(Instant::now() + UNWATCHED_FOR);
            return (inbox, Watching::Not);
        };
        let mut routes = lock(&self.routes);
        if routes.watching {
            // Another waiter's watch was confirmed first; ours closes as it drops.
            return (inbox, Watching::Opened);
        }
        routes.watching = true;
        tokio::spawn(follow(Arc::downgrade(session), self.routes.clone(), prefix, watch, created_at));
        (inbox, Watching::Opened)
    }
}

/// Routes the mailbox's puts to the waiters while the session lives. A broken stream is
/// re-opened from the first revision not yet covered; if that fails, or the history was
/// compacted or the watch refused, every waiter hears [`Heard::Missed`] and the next waiter to
/// register opens the watch again.
async fn follow(
    session: Weak<EtcdSession>,
    routes: Arc<Mutex<Routes>>,
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
            let mut routes = lock(&routes);
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
                let mut routes = lock(&routes);
                routes.watching = false;
                routes.tell_all(Heard::Missed);
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
