//! Which lock directories a session recently found others queued in. Queuing where the session
//! last found itself alone first asks, in the create itself, whether the queue is otherwise
//! empty (one round trip, no listing); queuing where it met others lists the queue right away.

use std::collections::HashSet;
use std::sync::Mutex;

/// At most this many directories are remembered; past it the memory starts over. A forgotten
/// directory costs its next contended acquire one extra round trip, nothing else.
const REMEMBERED: usize = 1024;

/// The lock directories in which this session's last queuing met other znodes.
#[derive(Debug, Default)]
pub(crate) struct RecentContention {
    dirs: Mutex<HashSet<String>>,
}

impl RecentContention {
    /// Whether the session's last queuing in `dir` met other znodes.
    pub(crate) fn met_others(&self, dir: &str) -> bool {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).contains(dir)
    }

    /// Records what the session's queuing in `dir` found: alone, or behind others.
    pub(crate) fn record(&self, dir: &str, alone: bool) {
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        if alone {
            dirs.remove(dir);
        } else if !dirs.contains(dir) {
            if dirs.len() >= REMEMBERED {
                dirs.clear();
            }
            dirs.insert(dir.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_queuing_per_directory() {
        let contention = RecentContention::default();
        // (directory, found alone, then: met others in /a, in /b)
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
