//! What a backend is asked to queue ([`EntryRequest`]: which recipe, carrying which value) and
//! the grant rule that decides when a queued entry is granted ([`GrantRule`]).
//!
//! Every recipe is the same queue of session-bound entries under one name; recipes differ in
//! how their entries are named on the server (a backend's layout) and in which entries ahead of
//! an entry block it (the grant rule). A backend implements queuing, herd-free waiting,
//! cancellation, ambiguous replies and loss once, and asks the rule which entry ahead of its own
//! to wait behind.

use std::num::NonZeroU32;

use crate::{LockError, LockName};

/// The recipe an entry is queued for. It picks the entry's name on the server (etcd: both use
/// Go's `concurrency` layout; ZooKeeper: Curator's `-lock-` or `-latch-` znodes) and its
/// [`GrantRule`].
///
/// ```
/// use distlock_core::backend::{GrantRule, Recipe};
/// assert_eq!(Recipe::Election.grant_rule(), GrantRule::Exclusive);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Recipe {
    /// A mutex: Curator's InterProcessMutex, etcd's `concurrency.Mutex`.
    Lock,
    /// A leader election: Curator's LeaderLatch, etcd's `concurrency.Election`. The entry
    /// carries the candidate's value.
    Election,
    /// The read side of a read-write lock: Curator's InterProcessReadWriteLock read lock.
    Read,
    /// The write side of a read-write lock: Curator's InterProcessReadWriteLock write lock.
    Write,
    /// A permit of a counting semaphore with this many permits: at most that many entries hold.
    Permit(NonZeroU32),
}

impl Recipe {
    /// The rule that grants this recipe's entries.
    ///
    /// ```
    /// use distlock_core::backend::{GrantRule, Recipe};
    /// assert_eq!(Recipe::Lock.grant_rule(), GrantRule::Exclusive);
    /// ```
    pub fn grant_rule(self) -> GrantRule {
        match self {
            Recipe::Lock | Recipe::Election | Recipe::Write => GrantRule::Exclusive,
            Recipe::Read => GrantRule::Shared,
            Recipe::Permit(permits) => GrantRule::Permits(permits),
        }
    }

    /// A semaphore permit's number of permits; `None` for every other recipe.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use distlock_core::backend::Recipe;
    /// let four = NonZeroU32::new(4).unwrap();
    /// assert_eq!(Recipe::Permit(four).permits(), Some(four));
    /// assert_eq!(Recipe::Lock.permits(), None);
    /// ```
    pub fn permits(self) -> Option<NonZeroU32> {
        match self {
            Recipe::Permit(permits) => Some(permits),
            _ => None,
        }
    }

    /// Whether an entry of this recipe excludes every entry behind it while it holds: all but
    /// the read lock's and the semaphore's. A release of an exclusive holder means it was first
    /// in its queue.
    ///
    /// ```
    /// use distlock_core::backend::Recipe;
    /// assert!(Recipe::Write.is_exclusive() && !Recipe::Read.is_exclusive());
    /// ```
    pub fn is_exclusive(self) -> bool {
        self.grant_rule() == GrantRule::Exclusive
    }

    /// Whether entries of this recipe and of `other` queue together: the read and the write
    /// lock's do, and permits of a semaphore whatever their number (so that clients that
    /// disagree on it meet); the lock and the election each have their own queue.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use distlock_core::backend::Recipe;
    /// assert!(Recipe::Read.shares_queue_with(Recipe::Write));
    /// assert!(!Recipe::Lock.shares_queue_with(Recipe::Write));
    /// let (two, three) = (NonZeroU32::new(2).unwrap(), NonZeroU32::new(3).unwrap());
    /// assert!(Recipe::Permit(two).shares_queue_with(Recipe::Permit(three)));
    /// ```
    pub fn shares_queue_with(self, other: Recipe) -> bool {
        matches!(
            (self, other),
            (Recipe::Lock, Recipe::Lock)
                | (Recipe::Election, Recipe::Election)
                | (Recipe::Read | Recipe::Write, Recipe::Read | Recipe::Write)
                | (Recipe::Permit(_), Recipe::Permit(_))
        )
    }

    /// The value an entry of this recipe carries of itself: a permit's number of permits in
    /// decimal (for operators reading the server, and for its grant's mark); empty for the
    /// others (an election's candidate brings its own).
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use distlock_core::backend::Recipe;
    /// assert_eq!(Recipe::Permit(NonZeroU32::new(4).unwrap()).value(), b"4");
    /// assert!(Recipe::Lock.value().is_empty());
    /// ```
    pub fn value(self) -> Vec<u8> {
        match self {
            Recipe::Permit(permits) => permits.to_string().into_bytes(),
            _ => Vec::new(),
        }
    }

    /// Which kind of queue entries of this recipe join, for the queues kept in this crate (the
    /// `mem://` server's, a client's local ones): the lock and the election one (as on etcd),
    /// the read-write lock's readers and writers another, a semaphore's permits a third.
    pub(crate) fn queue_kind(self) -> QueueKind {
        match self {
            Recipe::Lock | Recipe::Election => QueueKind::Lock,
            Recipe::Read | Recipe::Write => QueueKind::ReadWrite,
            Recipe::Permit(_) => QueueKind::Semaphore,
        }
    }

    /// For a permit of `name`: `LockError::PermitsMismatch` if any of `queued` (the numbers of
    /// permits the entries already in the queue carry) is not this permit's. Nothing for the
    /// other recipes.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use distlock_core::{backend::Recipe, LockError, LockName};
    /// let name = LockName::new("api")?;
    /// let two = Recipe::Permit(NonZeroU32::new(2).unwrap());
    /// assert!(two.check_permits(&name, [2, 2]).is_ok());
    /// assert!(matches!(two.check_permits(&name, [2, 3]), Err(LockError::PermitsMismatch { queued: 3, asked: 2, .. })));
    /// assert!(Recipe::Lock.check_permits(&name, [3]).is_ok());
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn check_permits(self, name: &LockName, queued: impl IntoIterator<Item = u32>) -> Result<(), LockError> {
        let Recipe::Permit(asked) = self else { return Ok(()) };
        match queued.into_iter().find(|queued| *queued != asked.get()) {
            Some(queued) => Err(LockError::PermitsMismatch { name: name.to_string(), queued, asked: asked.get() }),
            None => Ok(()),
        }
    }

    /// What `inspect` calls an entry of this recipe's.
    ///
    /// ```
    /// use distlock_core::{backend::Recipe, EntryKind};
    /// assert_eq!(Recipe::Election.entry_kind(), EntryKind::Exclusive);
    /// ```
    pub fn entry_kind(self) -> crate::EntryKind {
        match self {
            Recipe::Lock | Recipe::Election => crate::EntryKind::Exclusive,
            Recipe::Read => crate::EntryKind::Read,
            Recipe::Write => crate::EntryKind::Write,
            Recipe::Permit(permits) => crate::EntryKind::Permit(permits.get()),
        }
    }

    /// What a span or an error calls an entry of this recipe's: `"lock"` or `"election"`.
    ///
    /// ```
    /// assert_eq!(distlock_core::backend::Recipe::Election.noun(), "election");
    /// ```
    pub fn noun(self) -> &'static str {
        match self {
            Recipe::Lock => "lock",
            Recipe::Election => "election",
            Recipe::Read => "read lock",
            Recipe::Write => "write lock",
            Recipe::Permit(_) => "permit",
        }
    }
}

/// The kinds of queue a name has (see [`Recipe::queue_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum QueueKind {
    Lock,
    ReadWrite,
    Semaphore,
}

impl QueueKind {
    /// Every kind, in the order `inspect` looks at a name's queues.
    pub(crate) const ALL: [QueueKind; 3] = [QueueKind::Lock, QueueKind::ReadWrite, QueueKind::Semaphore];
}

/// What [`crate::backend::LockBackend::acquire`] is asked to queue.
///
/// ```
/// use distlock_core::backend::{EntryRequest, Recipe};
/// let lock = EntryRequest::lock();
/// assert_eq!((lock.recipe, lock.value.as_slice()), (Recipe::Lock, &b""[..]));
/// let candidate = EntryRequest::candidate("10.0.0.5:8080");
/// assert_eq!(candidate.value, b"10.0.0.5:8080");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRequest {
    /// The recipe the entry is for.
    pub recipe: Recipe,
    /// The value the entry carries (the etcd key's value, the znode's data): empty for a lock,
    /// the candidate's value for an election.
    pub value: Vec<u8>,
}

impl EntryRequest {
    /// An entry of a lock: no value.
    pub fn lock() -> Self {
        EntryRequest { recipe: Recipe::Lock, value: Vec::new() }
    }

    /// An entry of a candidate in an election, carrying `value`.
    pub fn candidate(value: &str) -> Self {
        EntryRequest { recipe: Recipe::Election, value: value.as_bytes().to_vec() }
    }

    /// An entry of a semaphore with `permits` permits; its value is that number in decimal,
    /// for operators reading the server.
    pub fn permit(permits: NonZeroU32) -> Self {
        let recipe = Recipe::Permit(permits);
        EntryRequest { recipe, value: recipe.value() }
    }

    /// An entry of a read-write lock's read (`shared`) or write side: no value.
    pub fn read_write(shared: bool) -> Self {
        EntryRequest { recipe: if shared { Recipe::Read } else { Recipe::Write }, value: Vec::new() }
    }
}

/// When an entry is granted, given the entries ahead of it in the queue. The answer names the
/// one entry to wait behind, so that a release wakes only the waiters it admits (herd-free).
///
/// ```
/// use distlock_core::backend::{Grant, GrantRule, Recipe};
/// let ahead = [Recipe::Write, Recipe::Read];
/// assert_eq!(GrantRule::Exclusive.decide(&ahead, |r| r.is_exclusive()), Grant::WaitBehind(1));
/// assert_eq!(GrantRule::Shared.decide(&ahead, |r| r.is_exclusive()), Grant::WaitBehind(0));
/// assert_eq!(GrantRule::Shared.decide(&[Recipe::Read], |r| r.is_exclusive()), Grant::Granted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrantRule {
    /// Granted when nothing is ahead; waits behind its predecessor (the lock, the election, the
    /// write lock).
    Exclusive,
    /// Granted when no exclusive entry is ahead; waits behind the nearest exclusive entry ahead
    /// (the read lock): a writer's release wakes the readers up to the next writer.
    Shared,
    /// Granted when fewer than this many entries are ahead (a semaphore's permits). The first
    /// waiter, with exactly that many holders ahead, is admitted by any of them leaving, so it
    /// waits for any entry ahead to go. A waiter further back waits for its predecessor to go
    /// or to be granted: it becomes the first waiter then, and no release goes unnoticed however
    /// the holders leave (watching the entry that many places ahead would miss a holder ahead of
    /// that one leaving first).
    Permits(NonZeroU32),
}

/// A [`GrantRule`]'s answer for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Nothing ahead blocks it: the entry holds.
    Granted,
    /// Blocked: wait until the entry at this index of `ahead` is gone, then ask again.
    WaitBehind(usize),
    /// Blocked by holders only, any of which admits it by leaving (a semaphore's first waiter):
    /// wait until any entry of `ahead` is gone; then it holds.
    WaitForAnyAhead,
    /// Blocked by waiters too (a semaphore's later waiter): wait until the entry at this index
    /// of `ahead` (the predecessor) is gone or granted, then ask again. An entry granted after
    /// waiting under this rule therefore tells its successor (a backend marks it).
    WaitUntilGranted(usize),
}

impl GrantRule {
    /// Whether an entry with `ahead` before it is granted once the entries at `gone` (indices
    /// into `ahead`) have left, with the rest still there. What a waiter read ahead of it holds
    /// everything that can ever be ahead of it (later entries queue behind), and the rules only
    /// grant more as entries leave, so `true` means those deletions alone grant it: nothing
    /// needs reading after them.
    ///
    /// ```
    /// use distlock_core::backend::{GrantRule, Recipe};
    /// let ahead = [Recipe::Read, Recipe::Read, Recipe::Write];
    /// // A reader behind a writer that has only readers ahead: the writer's going grants it.
    /// assert!(GrantRule::Shared.granted_without(&ahead, &[2], |r| r.is_exclusive()));
    /// // A writer there waits for all of them.
    /// assert!(!GrantRule::Exclusive.granted_without(&ahead, &[2], |r| r.is_exclusive()));
    /// ```
    pub fn granted_without<E>(self, ahead: &[E], gone: &[usize], is_exclusive: impl Fn(&E) -> bool) -> bool {
        let rest: Vec<&E> = ahead.iter().enumerate().filter(|(i, _)| !gone.contains(i)).map(|(_, e)| e).collect();
        self.decide(&rest, |e| is_exclusive(e)) == Grant::Granted
    }

    /// Decides for an entry with `ahead` before it, in queue order (oldest first);
    /// `is_exclusive` tells an exclusive entry (of the lock, the election, the write lock)
    /// from a shared one (the read lock's).
    pub fn decide<E>(self, ahead: &[E], is_exclusive: impl Fn(&E) -> bool) -> Grant {
        match self {
            GrantRule::Exclusive => match ahead.len() {
                0 => Grant::Granted,
                n => Grant::WaitBehind(n - 1),
            },
            GrantRule::Shared => match ahead.iter().rposition(is_exclusive) {
                None => Grant::Granted,
                Some(writer) => Grant::WaitBehind(writer),
            },
            GrantRule::Permits(permits) => {
                let permits = permits.get() as usize;
                match ahead.len() {
                    n if n < permits => Grant::Granted,
                    n if n == permits => Grant::WaitForAnyAhead,
                    n => Grant::WaitUntilGranted(n - 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Recipe::{Read as R, Write as W};

    #[test]
    fn the_exclusive_rule_grants_the_head_and_waits_behind_the_predecessor() {
        let table: &[(&[Recipe], Grant)] =
            &[(&[], Grant::Granted), (&[R], Grant::WaitBehind(0)), (&[W, R, R], Grant::WaitBehind(2))];
        for (ahead, expected) in table {
            assert_eq!(GrantRule::Exclusive.decide(ahead, |r| r.is_exclusive()), *expected, "{ahead:?}");
        }
    }

    #[test]
    fn the_shared_rule_waits_only_for_the_nearest_writer_ahead() {
        let table: &[(&[Recipe], Grant)] = &[
            (&[], Grant::Granted),
            (&[R, R], Grant::Granted),
            (&[W], Grant::WaitBehind(0)),
            (&[R, W, R], Grant::WaitBehind(1)),
            (&[W, R, W, R, R], Grant::WaitBehind(2)),
        ];
        for (ahead, expected) in table {
            assert_eq!(GrantRule::Shared.decide(ahead, |r| r.is_exclusive()), *expected, "{ahead:?}");
        }
    }

    #[test]
    fn the_permits_rule_admits_that_many_and_chains_the_waiters_behind() {
        let two = GrantRule::Permits(NonZeroU32::new(2).unwrap());
        let table: &[(&[Recipe], Grant)] = &[
            (&[], Grant::Granted),
            (&[R], Grant::Granted),
            (&[R, R], Grant::WaitForAnyAhead),
            (&[R, R, R], Grant::WaitUntilGranted(2)),
            (&[R, R, R, R, R], Grant::WaitUntilGranted(4)),
        ];
        for (ahead, expected) in table {
            assert_eq!(two.decide(ahead, |r| r.is_exclusive()), *expected, "{ahead:?}");
        }
    }

    #[test]
    fn readers_and_writers_share_a_queue_and_locks_and_elections_have_their_own() {
        let permit = Recipe::Permit(NonZeroU32::new(3).unwrap());
        for recipe in [Recipe::Lock, Recipe::Election, R, W, permit] {
            assert!(recipe.shares_queue_with(recipe), "{recipe:?}");
            assert_eq!(recipe.is_exclusive(), ![R, permit].contains(&recipe), "{recipe:?}");
        }
        assert!(R.shares_queue_with(W) && W.shares_queue_with(R));
        assert!(!Recipe::Lock.shares_queue_with(Recipe::Election) && !permit.shares_queue_with(W));
    }
}
