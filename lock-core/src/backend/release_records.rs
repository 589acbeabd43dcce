//! Whether a session may write its locks' release records: the write a holder's release adds to
//! the atomic delete of its queue entry (etcd's release marker key, ZooKeeper's lock directory
//! data) so that the waiter behind learns it is first by reading one record instead of the
//! queue. A server whose access control refuses them is remembered for the rest of the session,
//! which then releases and wakes up without them, and says so once.

use std::sync::atomic::{AtomicBool, Ordering};

/// A session's permission to write release records, as the server last answered.
///
/// ```
/// use distlock_core::backend::ReleaseRecords;
///
/// let records = ReleaseRecords::default();
/// assert!(records.allowed());
/// records.refuse("etcd", "distlock//released/", "permission denied", "grant read and write on it");
/// assert!(!records.allowed(), "the session goes without them from now on");
/// ```
#[derive(Debug, Default)]
pub struct ReleaseRecords {
    refused: AtomicBool,
}

impl ReleaseRecords {
    /// Whether the session still writes (and, on wake-up, reads) release records.
    pub fn allowed(&self) -> bool {
        !self.refused.load(Ordering::Relaxed)
    }

    /// Records that `backend` refused a release record at `place` for `reason`: the session goes
    /// without them from now on. The first refusal logs a warning that ends with `remedy`, what
    /// an operator grants to restore them.
    pub fn refuse(&self, backend: &'static str, place: &str, reason: &str, remedy: &'static str) {
        if !self.refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                backend,
                place,
                reason,
                "the server refused this session its locks' release records: releases go without them, and \
                 a woken waiter reads the queue instead (slower with many waiters); {remedy}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_lasts_and_later_ones_change_nothing() {
        let records = ReleaseRecords::default();
        assert!(records.allowed());
        records.refuse("zookeeper", "/locks/a", "NoAuth", "grant WRITE");
        records.refuse("zookeeper", "/locks/b", "NoAuth", "grant WRITE");
        assert!(!records.allowed());
    }
}
