//! A session's mailbox for its waiting permits, as far as both backends share it: the routing of
//! the marks a releasing permit holder leaves (`granted` for the waiter its release admits,
//! `first` for the waiter first in line after it) to the waiting permit they name, and the
//! bookkeeping of the one watch that brings them (whether it runs, whether the server refused
//! it). The backend opens that watch (etcd: a prefix watch; ZooKeeper: a persistent recursive
//! watch), follows it, and calls [`PermitMailbox::deliver`] for each mark it sees.
//!
//! A mark that comes before its waiter registers is kept (a few hundred at most) until it does:
//! a release can be faster than the queuing reply. A watch that may have missed marks tells
//! every registered waiter [`Heard::Missed`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// What a permit's mailbox told it, or that it may have missed something.
///
/// ```
/// use distlock_core::backend::Heard;
/// assert_eq!(Heard::of_mark(b"granted"), Some(Heard::Granted));
/// assert_eq!(Heard::of_mark(b"first"), Some(Heard::First));
/// assert_eq!(Heard::of_mark(b"other"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Nothing yet.
    Nothing,
    /// First in line: the next release admits it (nothing is owed to it until then).
    First,
    /// Granted: a release made it one of the first N.
    Granted,
    /// The mailbox's watch lost history or was refused: marks may have gone unheard.
    Missed,
}

/// The value of a mark that grants its permit.
pub const GRANTED: &[u8] = b"granted";
/// The value of a mark that makes its permit first in line.
pub const FIRST: &[u8] = b"first";

impl Heard {
    /// What a mark's value says; `None` for a value no release writes.
    pub fn of_mark(value: &[u8]) -> Option<Heard> {
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

/// How many marks for no registered waiter are kept: a mark can come before its waiter has
/// registered (the release was faster than the queuing reply), or after it left.
const UNCLAIMED_KEPT: usize = 256;

struct State<K> {
    waiters: HashMap<K, watch::Sender<Heard>>,
    unclaimed: VecDeque<(K, Heard)>,
    /// Whether the backend's watch runs.
    watching: bool,
    /// Whether the session goes without its mailbox (its waiters wait by watches meanwhile).
    refused: Refused,
}

/// Whether, and how long, a session goes without its mailbox.
#[derive(Debug, Clone, Copy)]
enum Refused {
    No,
    /// Until then: its watch went unconfirmed (refused, or a server too slow to answer).
    Until(Instant),
    /// For good: a write of a mark was refused (credentials not granted the mailboxes).
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

fn lock<K>(state: &Mutex<State<K>>) -> std::sync::MutexGuard<'_, State<K>> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A session's mailbox: its waiting permits by key (etcd: a key's create revision; ZooKeeper:
/// the permit znode's name), and the state of the watch that brings their marks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use distlock_core::backend::{Heard, MailboxWatch, PermitMailbox};
/// let mailbox = PermitMailbox::default();
/// mailbox.deliver(7, Heard::Granted); // before its waiter registered: kept
/// let (inbox, watch) = mailbox.register(7);
/// assert_eq!(watch, MailboxWatch::ToOpen, "nobody opened the watch yet");
/// assert_eq!(inbox.last(), Heard::Granted);
/// # }
/// ```
pub struct PermitMailbox<K> {
    state: Arc<Mutex<State<K>>>,
}

impl<K> Default for PermitMailbox<K> {
    fn default() -> Self {
        let state =
            State { waiters: HashMap::new(), unclaimed: VecDeque::new(), watching: false, refused: Refused::No };
        PermitMailbox { state: Arc::new(Mutex::new(state)) }
    }
}

impl<K> std::fmt::Debug for PermitMailbox<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("PermitMailbox")
            .field("waiters", &state.waiters.len())
            .field("watching", &state.watching)
            .field("refused", &state.refused)
            .finish()
    }
}

/// Whether the mailbox's watch runs, as a waiter registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxWatch {
    /// It does: every mark left after the waiter's queuing reaches it.
    Running,
    /// It does not: the registering waiter opens it and calls [`PermitMailbox::opened`].
    ToOpen,
    /// The session goes without its mailbox for now: the waiter must not count on marks.
    Refused,
}

/// Whether the mailbox's watch was there when a waiter registered, once the backend has tried to
/// open it ([`MailboxWatch::ToOpen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watching {
    /// It was: every mark left after the waiter's queuing reaches it.
    Already,
    /// It was opened now: a mark left before it was confirmed would be unheard, so the waiter
    /// looks once (etcd: reads its place; ZooKeeper: reads its doorbell).
    Opened,
    /// It could not be opened (refused, or no stream): the waiter must not count on marks.
    Not,
}

impl<K: Hash + Eq + Clone> PermitMailbox<K> {
    /// Registers the waiting permit `key`, telling it what came for it before.
    pub fn register(&self, key: K) -> (Inbox<K>, MailboxWatch) {
        let (sender, heard) = watch::channel(Heard::Nothing);
        let mut state = lock(&self.state);
        state.unclaimed.retain(|(k, heard)| {
            if *k == key {
                tell(&sender, *heard);
            }
            *k != key
        });
        state.waiters.insert(key.clone(), sender);
        let watch = if state.refused.in_force() {
            MailboxWatch::Refused
        } else if state.watching {
            MailboxWatch::Running
        } else {
            MailboxWatch::ToOpen
        };
        (Inbox { key, heard, state: self.state.clone() }, watch)
    }

    /// Records that a waiter's watch was confirmed: `true` if it is the mailbox's watch from now
    /// on (the caller follows it), `false` if another waiter's came first (the caller drops its
    /// own).
    pub fn opened(&self) -> bool {
        let mut state = lock(&self.state);
        !std::mem::replace(&mut state.watching, true)
    }

    /// Routes a mark for `key` to its waiter, or keeps it until that waiter registers.
    pub fn deliver(&self, key: K, heard: Heard) {
        let mut state = lock(&self.state);
        match state.waiters.get(&key) {
            Some(waiter) => tell(waiter, heard),
            None => {
                if state.unclaimed.len() == UNCLAIMED_KEPT {
                    state.unclaimed.pop_front();
                }
                state.unclaimed.push_back((key, heard));
            }
        }
    }

    /// The watch ended, and marks may have gone unheard: every waiter hears
    /// [`Heard::Missed`], and the next to register opens the watch again.
    pub fn watch_lost(&self) {
        let mut state = lock(&self.state);
        state.watching = false;
        for waiter in state.waiters.values() {
            tell(waiter, Heard::Missed);
        }
    }

    /// Every registered waiter hears [`Heard::Missed`] (marks may have gone unheard while the
    /// watch itself goes on).
    pub fn tell_all_missed(&self) {
        let state = lock(&self.state);
        for waiter in state.waiters.values() {
            tell(waiter, Heard::Missed);
        }
    }

    /// The watch could not be opened: the session goes without its mailbox for `period`.
    pub fn refuse_for(&self, period: Duration) {
        lock(&self.state).refused = Refused::Until(Instant::now() + period);
    }

    /// The server refused the session a write to a mailbox (credentials not granted it): later
    /// waiters wait by watches without asking again.
    pub fn refuse(&self) {
        lock(&self.state).refused = Refused::ForGood;
    }

    /// Whether the session goes without its mailbox now.
    pub fn is_refused(&self) -> bool {
        lock(&self.state).refused.in_force()
    }
}

/// A waiting permit's registration: what its mailbox tells it. Dropping it unregisters.
pub struct Inbox<K: Hash + Eq> {
    key: K,
    heard: watch::Receiver<Heard>,
    state: Arc<Mutex<State<K>>>,
}

impl<K: Hash + Eq> Inbox<K> {
    /// What was heard last (a grant stays heard).
    pub fn last(&self) -> Heard {
        *self.heard.borrow()
    }

    /// Waits until the mailbox tells something new, and returns it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing heard is lost by dropping the future.
    pub async fn next(&mut self) -> Heard {
        match self.heard.changed().await {
            Ok(()) => *self.heard.borrow_and_update(),
            Err(_) => std::future::pending().await,
        }
    }
}

impl<K: Hash + Eq> Drop for Inbox<K> {
    fn drop(&mut self) {
        lock(&self.state).waiters.remove(&self.key);
    }
}

impl<K: Hash + Eq> std::fmt::Debug for Inbox<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("last", &self.last()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_reach_their_waiter_and_a_grant_stays_heard() {
        let mailbox = PermitMailbox::default();
        let (mut inbox, watch) = mailbox.register(1);
        assert_eq!(watch, MailboxWatch::ToOpen);
        assert!(mailbox.opened(), "the first confirmed watch is the mailbox's");
        assert!(!mailbox.opened(), "a second is not");
        assert_eq!(mailbox.register(9).1, MailboxWatch::Running);
        mailbox.deliver(2, Heard::First);
        mailbox.deliver(1, Heard::First);
        assert_eq!(inbox.next().await, Heard::First, "another's mark not heard");
        mailbox.deliver(1, Heard::Granted);
        assert_eq!(inbox.next().await, Heard::Granted);
        mailbox.deliver(1, Heard::First);
        mailbox.watch_lost();
        assert_eq!(inbox.last(), Heard::Granted, "a grant is not taken back");
        let (late, watch) = mailbox.register(2);
        assert_eq!(late.last(), Heard::First, "a mark that came before its waiter registered");
        assert_eq!(watch, MailboxWatch::ToOpen, "the lost watch is opened again by the next waiter");
    }

    #[tokio::test]
    async fn a_lost_watch_tells_every_waiter_and_a_refusal_holds() {
        let mailbox = PermitMailbox::default();
        let (mut inbox, _) = mailbox.register("a");
        mailbox.tell_all_missed();
        assert_eq!(inbox.next().await, Heard::Missed);
        mailbox.refuse_for(Duration::from_secs(60));
        assert_eq!(mailbox.register("b").1, MailboxWatch::Refused);
        assert!(mailbox.is_refused());
        drop(inbox);
        mailbox.deliver("a", Heard::Granted);
        assert_eq!(mailbox.register("a").0.last(), Heard::Granted, "an unregistered waiter's mark is kept");
    }
}
