//! Which lock queues a session recently found others in. Queuing where the session last found
//! itself alone first asks, in the request that queues, only whether the queue is otherwise
//! empty (the cheapest request that can make us the holder); queuing where it met others reads
//! the queue right away. ZooKeeper's queue is a lock directory, etcd's a key prefix.

use std::collections::HashSet;
use std::sync::Mutex;

/// At most this many queues are remembered; past it the memory starts over. A forgotten queue
/// costs its next contended acquire one extra round trip, nothing else.
const REMEMBERED: usize = 1024;

/// The lock queues in which this session's last queuing met others.
///
/// ```
/// use distlock_core::RecentContention;
///
/// let contention = RecentContention::default();
/// assert!(!contention.met_others("locks/nightly/"), "alone until met otherwise");
/// contention.record("locks/nightly/", false);
/// assert!(contention.met_others("locks/nightly/"));
/// contention.record("locks/nightly/", true);
/// assert!(!contention.met_others("locks/nightly/"));
/// ```
#[derive(Debug, Default)]
pub struct RecentContention {
    queues: Mutex<HashSet<String>>,
}

impl RecentContention {
    /// Whether the session's last queuing in `queue` met others.
    pub fn met_others(&self, queue: &str) -> bool {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).contains(queue)
    }

    /// Records what the session's queuing in `queue` found: alone, or behind others.
    pub fn record(&self, queue: &str, alone: bool) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if alone {
            queues.remove(queue);
        } else if !queues.contains(queue) {
            if queues.len() >= REMEMBERED {
                queues.clear();
            }
            queues.insert(queue.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_queuing_per_queue() {
        let contention = RecentContention::default();
        // (queue, found alone, then: met others in /a, in /b)
        let steps = [
            ("/a", false, true, false),
            ("/b", false, true, true),
            ("/a", true, false, true),
            ("/a", true, false, true),
            ("/b", true, false, false),
        ];
        for (dir, alone, a, b) in steps {
            contention.record(dir, alone);
            assert_eq!((contention.met_others("/a"), contention.met_others("/b")), (a, b), "after {dir} alone={alone}");
        }
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
