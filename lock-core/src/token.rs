//! Fencing tokens: the number that orders holders of one lock.

use std::fmt;

/// A number that is strictly greater for every later holder of the same lock name, across
/// sessions and server restarts: etcd's create revision of the holder's key, ZooKeeper's czxid of
/// the holder's znode, the in-process server's revision for `mem://`.
///
/// Pass it with every write your critical section makes, and have the storage reject writes
/// carrying a token lower than the highest it has seen: a holder that was paused past its lease
/// then cannot overwrite its successor's work.
///
/// ```
/// use distlock_core::FencingToken;
///
/// let older = FencingToken::new(7);
/// let newer = FencingToken::new(9);
/// assert!(newer > older);
/// assert_eq!(newer.get(), 9);
/// assert_eq!(newer.to_string(), "9");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// Wraps a raw token.
    ///
    /// ```
    /// assert_eq!(distlock_core::FencingToken::new(3).get(), 3);
    /// ```
    pub const fn new(value: u64) -> Self {
        FencingToken(value)
    }

    /// The raw value.
    ///
    /// ```
    /// assert_eq!(distlock_core::FencingToken::from(5).get(), 5);
    /// ```
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for FencingToken {
    fn from(value: u64) -> Self {
        FencingToken(value)
    }
}

impl From<FencingToken> for u64 {
    fn from(token: FencingToken) -> Self {
        token.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
