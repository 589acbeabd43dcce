//! Which lock queues a session recently found others in. Queuing where the session has long
//! found itself alone first asks, in the request that queues, only whether the queue is
//! otherwise empty (the cheapest request that can make us the holder); queuing where it met
//! others lately reads the queue right away. ZooKeeper's queue is a lock directory, etcd's a key
//! prefix.
//!
//! A wrong guess of "alone" costs a round trip, so one empty queue is not enough to guess it
//! again: two clients taking turns find the queue empty every few turns (the other between its
//! release and its next queuing), and flipping on each would cost a round trip every few turns.

use std::collections::HashMap;
use std::sync::Mutex;

/// At most this many queues are remembered; past it the memory starts over. A forgotten queue
/// costs its next contended acquire one extra round trip, nothing else.
const REMEMBERED: usize = 1024;

/// The lock queues in which this session met others lately, each with how many times in a row
/// it has found itself alone there since.
///
/// ```
/// use distlock_core::backend::RecentContention;
///
/// let contention = RecentContention::default();
/// assert!(!contention.met_others("locks/nightly/"), "alone until met otherwise");
/// contention.record("locks/nightly/", false);
/// for _ in 1..RecentContention::ALONE_TO_FORGET {
///     contention.record("locks/nightly/", true);
///     assert!(contention.met_others("locks/nightly/"), "not alone often enough yet");
/// }
/// contention.record("locks/nightly/", true);
/// assert!(!contention.met_others("locks/nightly/"));
/// ```
#[derive(Debug, Default)]
pub struct RecentContention {
    alone_since_met: Mutex<HashMap<String, u32>>,
}

impl RecentContention {
    /// How many queuings in a row must find the session alone before it guesses "alone" again.
    pub const ALONE_TO_FORGET: u32 = 8;

    /// Whether the session met others in `queue` lately: since then, it found itself alone
    /// fewer than [`RecentContention::ALONE_TO_FORGET`] times in a row.
    pub fn met_others(&self, queue: &str) -> bool {
        self.alone_since_met.lock().unwrap_or_else(|p| p.into_inner()).contains_key(queue)
    }

    /// Records what the session's queuing in `queue` found: alone, or behind others.
    pub fn record(&self, queue: &str, alone: bool) {
        let mut queues = self.alone_since_met.lock().unwrap_or_else(|p| p.into_inner());
        if alone {
            if let Some(streak) = queues.get_mut(queue) {
                *streak += 1;
                if *streak >= Self::ALONE_TO_FORGET {
                    queues.remove(queue);
                }
            }
        } else if let Some(streak) = queues.get_mut(queue) {
            *streak = 0;
        } else {
            if queues.len() >= REMEMBERED {
                queues.clear();
            }
            queues.insert(queue.to_owned(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_a_queue_only_after_finding_itself_alone_there_often_enough() {
        let contention = RecentContention::default();
        let alone_times = |n: u32, queue: &str| (0..n).for_each(|_| contention.record(queue, true));
        contention.record("/a", false);
        contention.record("/b", false);
        alone_times(RecentContention::ALONE_TO_FORGET - 1, "/a");
        contention.record("/a", false);
        alone_times(RecentContention::ALONE_TO_FORGET - 1, "/a");
        assert!(contention.met_others("/a"), "meeting others again started the count over");
        alone_times(1, "/a");
        assert!(!contention.met_others("/a"), "alone often enough in a row");
        assert!(contention.met_others("/b"), "each queue on its own");
        alone_times(1, "/c");
        assert!(!contention.met_others("/c"), "a queue never contended is guessed alone");
    }

    #[test]
    fn starts_over_when_full() {
        let contention = RecentContention::default();
        for i in 0..REMEMBERED {
            contention.record(&format!("/lock-{i}"), false);
        }
        assert!(contention.met_others("/lock-0"));
        contention.record("/one-more", false);
        assert!(!contention.met_others("/lock-0"), "the memory started over");
        assert!(contention.met_others("/one-more"));
    }
}
