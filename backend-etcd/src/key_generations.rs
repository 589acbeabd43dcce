//! Which of a session's queue keys may still be deleted by a lost request. A holder with nothing
//! to write beside its deletion releases with a plain delete (what the server does fastest), not
//! a Txn fenced by the key's create revision. A plain delete whose reply was lost may yet be
//! applied, later, and would then remove whatever key of that name exists: the same session's
//! next hold of the same lock, if it reused the key. So after such a release the session moves
//! that queue to a new key generation (`<lease id hex>_<n>`, see [`crate::layout::queue_key`]),
//! and no key it writes there again can be the one the lost delete names.

use std::collections::HashMap;
use std::sync::Mutex;

/// The key generation of each queue (by queue prefix) where one of the session's releases went
/// unconfirmed; every other queue is at generation 0. One entry per such queue, for the
/// session's life: unconfirmed releases are rare, and each adds a few bytes.
#[derive(Debug, Default)]
pub(crate) struct KeyGenerations {
    moved: Mutex<HashMap<String, u32>>,
}

impl KeyGenerations {
    fn moved(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // Each critical section is one map operation: poison cannot leave it half done.
        self.moved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation the session's next key in the queue at `queue_prefix` has.
    pub(crate) fn current(&self, queue_prefix: &str) -> u32 {
        self.moved().get(queue_prefix).copied().unwrap_or(0)
    }

    /// A delete of our key in the queue at `queue_prefix` may still be applied: later keys there
    /// take the next generation.
    pub(crate) fn retire(&self, queue_prefix: &str) {
        let mut moved = self.moved();
        let generation = moved.entry(queue_prefix.to_owned()).or_insert(0);
        *generation = generation.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_queue_moves_on_and_the_others_stay() {
        let generations = KeyGenerations::default();
        assert_eq!(generations.current("p/a/"), 0);
        generations.retire("p/a/");
        generations.retire("p/a/");
        assert_eq!((generations.current("p/a/"), generations.current("p/b/")), (2, 0));
    }
}
