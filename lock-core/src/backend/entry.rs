//! What a backend is asked to queue ([`EntryRequest`]: which recipe, carrying which value) and
//! the grant rule that decides when a queued entry is granted ([`GrantRule`]).
//!
//! Every recipe is the same queue of session-bound entries under one name; recipes differ in
//! how their entries are named on the server (a backend's layout) and in which entries ahead of
//! an entry block it (the grant rule). A backend implements queuing, herd-free waiting,
//! cancellation, ambiguous replies and loss once, and asks the rule which entry ahead of its own
//! to wait behind.

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
            Recipe::Lock | Recipe::Election => GrantRule::Exclusive,
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
        }
    }
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
}

/// When an entry is granted, given the entries ahead of it in the queue. The answer names the
/// one entry to wait behind, so that a release wakes only the waiter it admits (herd-free).
///
/// ```
/// use distlock_core::backend::{Grant, GrantRule};
/// let ahead = ["holder", "waiter"];
/// assert_eq!(GrantRule::Exclusive.decide(&ahead), Grant::WaitBehind(1));
/// assert_eq!(GrantRule::Exclusive.decide::<&str>(&[]), Grant::Granted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrantRule {
    /// Granted when nothing is ahead; waits behind its predecessor (the lock, the election).
    Exclusive,
}

/// A [`GrantRule`]'s answer for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Nothing ahead blocks it: the entry holds.
    Granted,
    /// Blocked: wait until the entry at this index of `ahead` is gone, then ask again.
    WaitBehind(usize),
}

impl GrantRule {
    /// Decides for an entry with `ahead` before it, in queue order (oldest first).
    pub fn decide<E>(self, ahead: &[E]) -> Grant {
        match self {
            GrantRule::Exclusive => match ahead.len() {
                0 => Grant::Granted,
                n => Grant::WaitBehind(n - 1),
            },
        }
    }

    /// Whether an entry at `position` in the queue (0 = oldest) is granted, where only the
    /// position is known (a read of the keys ahead of ours that stopped at a limit).
    ///
    /// ```
    /// use distlock_core::backend::GrantRule;
    /// assert!(GrantRule::Exclusive.granted_at(0));
    /// assert!(!GrantRule::Exclusive.granted_at(3));
    /// ```
    pub fn granted_at(self, position: usize) -> bool {
        match self {
            GrantRule::Exclusive => position == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exclusive_rule_grants_the_head_and_waits_behind_the_predecessor() {
        let table: &[(&[u32], Grant)] =
            &[(&[], Grant::Granted), (&[7], Grant::WaitBehind(0)), (&[7, 8, 9], Grant::WaitBehind(2))];
        for (ahead, expected) in table {
            assert_eq!(GrantRule::Exclusive.decide(ahead), *expected, "{ahead:?}");
            assert_eq!(GrantRule::Exclusive.granted_at(ahead.len()), *expected == Grant::Granted);
        }
    }
}
