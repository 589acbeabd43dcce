//! The fault suite's checker: what must never happen, counted from the workers' histories, the
//! fenced store's log and the server's own record.

use std::collections::BTreeMap;

use crate::fenced_store::StoreEvent;
use crate::history::{Entry, Event};

/// What the server's own record (etcd's revision history, ZooKeeper's transaction log) says of
/// one lock's queue over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueReplay {
    /// The tokens that were ever first in line, in order (check (4)).
    pub owners: Vec<u64>,
    /// The most entries one session had in the queue at once: 1 means every waiter had exactly
    /// one, even when the reply to its create/Txn was lost.
    pub most_entries_of_one_session: usize,
}

/// The outcome of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Store operations decided (reads and writes).
    pub operations: usize,
    /// Successful acquisitions.
    pub acquisitions: usize,
    /// (1) accepted operations whose token is lower than an earlier accepted one.
    pub token_order_violations: usize,
    /// (2) acknowledged increments missing from the final value.
    pub lost_updates: usize,
    /// (3) pairs of holds whose [acquire-ok, min(release, lost)] intervals overlap.
    pub overlaps: usize,
    /// (4) acquisitions whose token never was the server's first in line (`None`: not checked).
    pub owner_mismatches: Option<usize>,
    /// (5) the longest time from one hold's end to the next hold's start, in ms.
    pub worst_handoff_ms: u64,
    /// Writes the store refused (stale holders stopped by fencing).
    pub rejected_writes: usize,
}

/// (1), (2): from the store's own log and the final value.
fn store_checks(log: &[StoreEvent], final_value: u64, verdict: &mut Verdict) {
    verdict.operations = log.len();
    let mut highest = 0;
    for event in log.iter().filter(|e| e.accepted) {
        if event.token < highest {
            verdict.token_order_violations += 1;
        }
        highest = highest.max(event.token);
    }
    let accepted_writes = log.iter().filter(|e| e.op == "write" && e.accepted).count() as u64;
    verdict.rejected_writes = log.iter().filter(|e| e.op == "write" && !e.accepted).count();
    // Every accepted write is an increment of the value it read: the final value counts them all.
    verdict.lost_updates = accepted_writes.saturating_sub(final_value) as usize;
}

/// A hold: from acquire-ok to the first of release-invoke and lost.
#[derive(Clone, Copy, Debug)]
struct Hold {
    start: u64,
    end: Option<u64>,
}

/// The holds in `history`; a hold of a worker that was killed ends at its `deaths` time.
fn holds(history: &[Entry], deaths: &BTreeMap<u32, u64>) -> Vec<Hold> {
    let mut open: BTreeMap<(u32, u64), Hold> = BTreeMap::new();
    let mut done = Vec::new();
    for e in history {
        match &e.event {
            Event::AcquireOk { token } => {
                open.insert((e.worker, *token), Hold { start: e.t, end: None });
            }
            Event::ReleaseInvoke { token } | Event::Lost { token, .. } => {
                if let Some(mut hold) = open.remove(&(e.worker, *token)) {
                    hold.end = Some(e.t);
                    done.push(hold);
                }
            }
            _ => {}
        }
    }
    // A worker killed while holding held until it died; otherwise the hold never ended.
    done.extend(open.into_iter().map(|((worker, _), hold)| Hold { end: deaths.get(&worker).copied(), ..hold }));
    done.sort_by_key(|h| h.start);
    done
}

/// Checks a finished run. `deaths` are the CLOCK_MONOTONIC times at which workers were killed;
/// `owner_tokens` is the server's own record of the tokens that became first in line, where the
/// backend keeps one (etcd's revision history).
pub fn check(
    history: &[Entry],
    deaths: &BTreeMap<u32, u64>,
    log: &[StoreEvent],
    final_value: u64,
    owner_tokens: Option<&[u64]>,
) -> Verdict {
    let mut verdict = Verdict::default();
    store_checks(log, final_value, &mut verdict);
    let holds = holds(history, deaths);
    verdict.acquisitions = holds.len();
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            if a.end.is_none_or(|end| b.start < end) {
                verdict.overlaps += 1;
            }
        }
    }
    verdict.worst_handoff_ms = holds
        .windows(2)
        .filter_map(|w| w[0].end.map(|end| w[1].start.saturating_sub(end) / 1_000_000))
        .max()
        .unwrap_or(0);
    if let Some(owners) = owner_tokens {
        let owners: std::collections::BTreeSet<u64> = owners.iter().copied().collect();
        let mismatches = history
            .iter()
            .filter(|e| matches!(e.event, Event::AcquireOk { token } if !owners.contains(&token)))
            .count();
        verdict.owner_mismatches = Some(mismatches);
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(worker: u32, t: u64, event: Event) -> Entry {
        Entry { worker, t, event }
    }

    fn store(t: u64, op: &str, token: u64, value: u64, accepted: bool) -> StoreEvent {
        StoreEvent { t, op: op.into(), key: "counter".into(), token, value, accepted }
    }

    #[test]
    fn a_clean_run_has_no_violations() {
        let history = vec![
            entry(1, 10, Event::AcquireOk { token: 5 }),
            entry(1, 20, Event::ReleaseInvoke { token: 5 }),
            entry(2, 30, Event::AcquireOk { token: 7 }),
            entry(2, 40, Event::ReleaseInvoke { token: 7 }),
        ];
        let log = vec![
            store(11, "read", 5, 0, true),
            store(12, "write", 5, 1, true),
            store(31, "read", 7, 1, true),
            store(32, "write", 7, 2, true),
        ];
        let v = check(&history, &BTreeMap::new(), &log, 2, Some(&[5, 7]));
        assert_eq!((v.token_order_violations, v.lost_updates, v.overlaps, v.owner_mismatches), (0, 0, 0, Some(0)));
        assert_eq!(v.acquisitions, 2);
    }

    #[test]
    fn a_killed_holder_holds_until_its_death() {
        let history = vec![entry(1, 10, Event::AcquireOk { token: 5 }), entry(2, 30, Event::AcquireOk { token: 7 })];
        let died_at_20 = BTreeMap::from([(1, 20)]);
        assert_eq!(check(&history, &died_at_20, &[], 0, None).overlaps, 0);
        assert_eq!(check(&history, &BTreeMap::new(), &[], 0, None).overlaps, 1, "no death known: it never ended");
    }

    #[test]
    fn each_violation_is_counted() {
        // Worker 1 is paused past its lease: it overlaps worker 2, its stale write is rejected.
        let history = vec![
            entry(1, 10, Event::AcquireOk { token: 5 }),
            entry(2, 30, Event::AcquireOk { token: 7 }),
            entry(2, 40, Event::ReleaseInvoke { token: 7 }),
            entry(1, 50, Event::ReleaseInvoke { token: 5 }),
            entry(3, 60, Event::AcquireOk { token: 9 }),
        ];
        let log = vec![
            store(11, "read", 5, 0, true),
            store(31, "read", 7, 0, true),
            store(32, "write", 7, 1, true),
            store(45, "write", 5, 1, true), // a store without fencing would accept this...
        ];
        let v = check(&history, &BTreeMap::new(), &log, 1, Some(&[5, 7]));
        assert_eq!(v.overlaps, 1, "5 [10,50] overlaps 7 [30,40]; 9 starts at 60, after both");
        assert_eq!(v.token_order_violations, 1, "...and that is what check (1) catches");
        assert_eq!(v.lost_updates, 1, "two accepted increments, final value 1");
        assert_eq!(v.owner_mismatches, Some(1), "token 9 never was first in line");
    }
}
