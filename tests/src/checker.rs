//! The fault suite's checker: what must never happen, counted from the workers' histories, the
//! fenced store's log and the server's own record. It states each recipe's grant rule itself,
//! independently of the library's, so that a wrong rule in the library shows as mismatches.

use std::collections::{BTreeMap, BTreeSet};

use crate::fenced_store::StoreEvent;
use crate::history::{Entry, Event};

/// Which entries of a queue hold, by a recipe's rule: always a prefix of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantRule {
    /// A lock or an election: the first entry.
    Exclusive,
    /// A read-write lock: a writer when first; readers while no writer is ahead of them.
    ReadWrite,
    /// A semaphore of this many permits: the first that many entries.
    Permits(usize),
}

impl GrantRule {
    /// How many entries at the head of a queue hold; `shared[i]`: entry i is a reader's.
    pub fn holders(self, shared: &[bool]) -> usize {
        match self {
            GrantRule::Exclusive => shared.len().min(1),
            GrantRule::ReadWrite => match shared.iter().position(|s| !s) {
                Some(0) => 1,
                Some(writer) => writer,
                None => shared.len(),
            },
            GrantRule::Permits(n) => shared.len().min(n),
        }
    }

    /// Whether a hold (`shared`: a reader's) may begin while `open` holds are held.
    fn may_join(self, open: &[Hold], shared: bool) -> bool {
        match self {
            GrantRule::Exclusive => open.is_empty(),
            GrantRule::ReadWrite => open.iter().all(|h| h.shared && shared),
            GrantRule::Permits(n) => open.len() < n,
        }
    }

    /// How many holds may be open at once: fewer, and a waiter could be granted.
    fn capacity(self) -> usize {
        match self {
            GrantRule::Permits(n) => n,
            _ => 1,
        }
    }
}

/// What the server's own record (etcd's revision history, ZooKeeper's transaction log) says of
/// one queue over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueReplay {
    /// The tokens the grant rule ever granted, in the order first granted (check (4)).
    pub granted: Vec<u64>,
    /// The most entries one session had in the queue at once: 1 means every waiter had exactly
    /// one, even when the reply to its create/Txn was lost.
    pub most_entries_of_one_session: usize,
}

impl QueueReplay {
    /// Notes who holds in `queue` (in queue order: token, and whether a reader's), after a change.
    pub fn observe(&mut self, rule: GrantRule, queue: &[(u64, bool)]) {
        let shared: Vec<bool> = queue.iter().map(|(_, s)| *s).collect();
        for (token, _) in &queue[..rule.holders(&shared)] {
            if !self.granted.contains(token) {
                self.granted.push(*token);
            }
        }
    }
}

/// The outcome of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Store operations decided (reads and writes).
    pub operations: usize,
    /// Successful acquisitions.
    pub acquisitions: usize,
    /// (1) accepted operations whose token is lower than an earlier accepted one they may not
    /// follow (a shared read may follow a higher shared read, nothing else may).
    pub token_order_violations: usize,
    /// (2) acknowledged increments missing from the final value.
    pub lost_updates: usize,
    /// (3) holds that began while holds they may not share with were open (by the histories:
    /// [acquire-ok, min(release, lost)]).
    pub overlaps: usize,
    /// (4) acquisitions whose token the server's record never granted (`None`: not checked).
    pub owner_mismatches: Option<usize>,
    /// (5) the longest time the lock (a permit) stood free while a worker waited, in ms.
    pub worst_handoff_ms: u64,
    /// (5) for a semaphore whose holder was killed: the longest time from a death until the
    /// live workers held every permit at once again, in ms (the dead session's permit came
    /// back); `None`: no death, or not a semaphore. A permit that never came back counts until
    /// the history's end.
    pub permits_back_ms: Option<u64>,
    /// Writes the store refused (stale holders stopped by fencing).
    pub rejected_writes: usize,
}

/// (1), (2): from the store's own log and the final value.
fn store_checks(log: &[StoreEvent], final_value: u64, verdict: &mut Verdict) {
    verdict.operations = log.len();
    let (mut highest, mut highest_exclusive) = (0, 0);
    for event in log.iter().filter(|e| e.accepted) {
        let shared = event.op == "shared_read";
        if event.token < if shared { highest_exclusive } else { highest } {
            verdict.token_order_violations += 1;
        }
        highest = highest.max(event.token);
        if !shared {
            highest_exclusive = highest_exclusive.max(event.token);
        }
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
    shared: bool,
}

/// The holds in `history`; a hold of a worker that was killed ends at its `deaths` time.
fn holds(history: &[Entry], deaths: &BTreeMap<u32, u64>) -> Vec<Hold> {
    let mut open: BTreeMap<(u32, u64), Hold> = BTreeMap::new();
    let mut done = Vec::new();
    for e in history {
        match &e.event {
            Event::AcquireOk { token, shared } => {
                open.insert((e.worker, *token), Hold { start: e.t, end: None, shared: *shared });
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

/// The waits in `history`, as [start, end): from acquire-invoke to the worker's next event (a
/// grant, an error, or the next invoke after a wait given up); a wait still open ends at the
/// worker's death or at the history's last event.
fn waits(history: &[Entry], deaths: &BTreeMap<u32, u64>) -> Vec<(u64, u64)> {
    let last = history.last().map_or(0, |e| e.t);
    let mut open: BTreeMap<u32, u64> = BTreeMap::new();
    let mut done = Vec::new();
    for e in history {
        if let Some(start) = open.remove(&e.worker) {
            done.push((start, e.t));
        }
        if e.event == Event::AcquireInvoke {
            open.insert(e.worker, e.t);
        }
    }
    done.extend(open.into_iter().map(|(worker, start)| (start, deaths.get(&worker).copied().unwrap_or(last))));
    done
}

/// (5): the longest time fewer holds than `rule` allows were open while a worker waited.
fn worst_free_while_waiting(rule: GrantRule, holds: &[Hold], waits: &[(u64, u64)]) -> u64 {
    // (time, change of open holds, change of waiters); at one instant, ends before starts.
    let mut changes: Vec<(u64, i64, i64)> = Vec::new();
    for h in holds {
        changes.push((h.start, 1, 0));
        changes.extend(h.end.map(|end| (end, -1, 0)));
    }
    for &(start, end) in waits {
        changes.push((start, 0, 1));
        changes.push((end, 0, -1));
    }
    changes.sort_by_key(|&(t, holds, waiters)| (t, holds + waiters));
    let (mut open, mut waiting, mut free_since, mut worst) = (0i64, 0i64, None::<u64>, 0);
    for (t, holds, waiters) in changes {
        open += holds;
        waiting += waiters;
        let free = open < rule.capacity() as i64 && waiting > 0;
        match (free, free_since) {
            (true, None) => free_since = Some(t),
            (false, Some(since)) => {
                worst = worst.max(t - since);
                free_since = None;
            }
            _ => {}
        }
    }
    worst / 1_000_000
}

/// (5) for a semaphore of `permits` whose holders died at `deaths`: see [`Verdict::permits_back_ms`].
fn permits_back_after_deaths(permits: usize, holds: &[Hold], deaths: &BTreeMap<u32, u64>, end: u64) -> Option<u64> {
    let open_at = |t: u64| holds.iter().filter(|h| h.start <= t && h.end.is_none_or(|end| t < end)).count();
    deaths
        .values()
        .map(|&died| {
            let back = holds.iter().map(|h| h.start).filter(|&t| t >= died && open_at(t) >= permits).min();
            back.unwrap_or(end).saturating_sub(died) / 1_000_000
        })
        .max()
}

/// Checks a finished run under `rule`. `deaths` are the CLOCK_MONOTONIC times at which workers
/// were killed; `granted` is the server's own record of the tokens its queue granted, where the
/// backend keeps one.
pub fn check(
    rule: GrantRule,
    history: &[Entry],
    deaths: &BTreeMap<u32, u64>,
    log: &[StoreEvent],
    final_value: u64,
    granted: Option<&[u64]>,
) -> Verdict {
    let mut verdict = Verdict::default();
    store_checks(log, final_value, &mut verdict);
    let holds = holds(history, deaths);
    verdict.acquisitions = holds.len();
    for (i, hold) in holds.iter().enumerate() {
        let open: Vec<Hold> = holds[..i].iter().filter(|a| a.end.is_none_or(|end| hold.start < end)).copied().collect();
        if !rule.may_join(&open, hold.shared) {
            verdict.overlaps += 1;
        }
    }
    verdict.worst_handoff_ms = worst_free_while_waiting(rule, &holds, &waits(history, deaths));
    if let GrantRule::Permits(permits) = rule {
        let end = history.last().map_or(0, |e| e.t);
        verdict.permits_back_ms = permits_back_after_deaths(permits, &holds, deaths, end);
    }
    if let Some(granted) = granted {
        let granted: BTreeSet<u64> = granted.iter().copied().collect();
        let mismatches = history
            .iter()
            .filter(|e| matches!(e.event, Event::AcquireOk { token, .. } if !granted.contains(&token)))
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

    fn ok(token: u64) -> Event {
        Event::AcquireOk { token, shared: false }
    }

    fn store(t: u64, op: &str, token: u64, value: u64, accepted: bool) -> StoreEvent {
        StoreEvent { t, op: op.into(), key: "counter".into(), token, value, accepted }
    }

    #[test]
    fn a_clean_run_has_no_violations() {
        let history = vec![
            entry(1, 10, ok(5)),
            entry(1, 20, Event::ReleaseInvoke { token: 5 }),
            entry(2, 30, ok(7)),
            entry(2, 40, Event::ReleaseInvoke { token: 7 }),
        ];
        let log = vec![
            store(11, "read", 5, 0, true),
            store(12, "write", 5, 1, true),
            store(31, "read", 7, 1, true),
            store(32, "write", 7, 2, true),
        ];
        let v = check(GrantRule::Exclusive, &history, &BTreeMap::new(), &log, 2, Some(&[5, 7]));
        assert_eq!((v.token_order_violations, v.lost_updates, v.overlaps, v.owner_mismatches), (0, 0, 0, Some(0)));
        assert_eq!(v.acquisitions, 2);
    }

    #[test]
    fn a_killed_holder_holds_until_its_death() {
        let history = vec![entry(1, 10, ok(5)), entry(2, 30, ok(7))];
        let died_at_20 = BTreeMap::from([(1, 20)]);
        assert_eq!(check(GrantRule::Exclusive, &history, &died_at_20, &[], 0, None).overlaps, 0);
        let never_ended = check(GrantRule::Exclusive, &history, &BTreeMap::new(), &[], 0, None);
        assert_eq!(never_ended.overlaps, 1, "no death known: it never ended");
    }

    #[test]
    fn each_violation_is_counted() {
        // Worker 1 is paused past its lease: it overlaps worker 2, its stale write is rejected.
        let history = vec![
            entry(1, 10, ok(5)),
            entry(2, 30, ok(7)),
            entry(2, 40, Event::ReleaseInvoke { token: 7 }),
            entry(1, 50, Event::ReleaseInvoke { token: 5 }),
            entry(3, 60, ok(9)),
        ];
        let log = vec![
            store(11, "read", 5, 0, true),
            store(31, "read", 7, 0, true),
            store(32, "write", 7, 1, true),
            store(45, "write", 5, 1, true), // a store without fencing would accept this...
        ];
        let v = check(GrantRule::Exclusive, &history, &BTreeMap::new(), &log, 1, Some(&[5, 7]));
        assert_eq!(v.overlaps, 1, "7 began while 5 [10,50] held; 9 began at 60, after both");
        assert_eq!(v.token_order_violations, 1, "...and that is what check (1) catches");
        assert_eq!(v.lost_updates, 1, "two accepted increments, final value 1");
        assert_eq!(v.owner_mismatches, Some(1), "token 9 never was granted");
    }

    #[test]
    fn each_rule_grants_a_prefix_of_the_queue() {
        let (r, w) = (true, false);
        assert_eq!(GrantRule::Exclusive.holders(&[r, r]), 1);
        assert_eq!(GrantRule::Exclusive.holders(&[]), 0);
        assert_eq!(GrantRule::ReadWrite.holders(&[r, r, w, r]), 2, "readers up to the first writer");
        assert_eq!(GrantRule::ReadWrite.holders(&[w, r, r]), 1, "a writer first holds alone");
        assert_eq!(GrantRule::ReadWrite.holders(&[r, r]), 2);
        assert_eq!(GrantRule::Permits(2).holders(&[w, w, w]), 2);
        assert_eq!(GrantRule::Permits(2).holders(&[w]), 1);

        let mut replay = QueueReplay::default();
        replay.observe(GrantRule::ReadWrite, &[(3, r), (4, w), (5, r)]);
        replay.observe(GrantRule::ReadWrite, &[(4, w), (5, r)]);
        replay.observe(GrantRule::ReadWrite, &[(5, r), (6, r)]);
        assert_eq!(replay.granted, [3, 4, 5, 6]);
    }

    #[test]
    fn readers_share_and_a_writer_excludes_by_the_histories_and_the_store() {
        let read = |token| Event::AcquireOk { token, shared: true };
        let history = vec![
            entry(1, 10, read(5)),
            entry(2, 11, read(6)),
            entry(1, 20, Event::ReleaseInvoke { token: 5 }),
            entry(3, 21, ok(7)), // reader 6 still holds: a violation
            entry(2, 30, Event::ReleaseInvoke { token: 6 }),
        ];
        let v = check(GrantRule::ReadWrite, &history, &BTreeMap::new(), &[], 0, None);
        assert_eq!(v.overlaps, 1, "the two readers share; the writer may not join them");
        // Reads of readers 6 then 5 are in order; a write of 5 after reader 6 read is not.
        let log = vec![
            store(12, "shared_read", 6, 0, true),
            store(13, "shared_read", 5, 0, true),
            store(22, "write", 5, 1, true),
            store(23, "shared_read", 4, 1, true),
        ];
        let v = check(GrantRule::ReadWrite, &[], &BTreeMap::new(), &log, 1, None);
        assert_eq!(v.token_order_violations, 2, "the write of 5 after 6, the read of 4 after the write of 5");
    }

    #[test]
    fn a_semaphore_allows_its_permits_and_counts_a_permit_left_free() {
        let history = vec![
            entry(1, 10, ok(5)),
            entry(2, 11, ok(6)),
            entry(3, 12, Event::AcquireInvoke),
            entry(1, 20, Event::ReleaseInvoke { token: 5 }),
            entry(3, 25_000_020, ok(7)),
            entry(2, 25_000_030, ok(8)), // 6 never released: a third hold
        ];
        let v = check(GrantRule::Permits(2), &history, &BTreeMap::new(), &[], 0, None);
        assert_eq!(v.overlaps, 1, "5 and 6 share the two permits; 8 beside 6 and 7 is one too many");
        assert_eq!(v.worst_handoff_ms, 25, "a permit stood free from 20 while worker 3 waited");
        let exclusive = check(GrantRule::Exclusive, &history[..2], &BTreeMap::new(), &[], 0, None);
        assert_eq!(exclusive.overlaps, 1);
    }

    #[test]
    fn a_dead_holders_permit_counts_until_the_survivors_hold_every_permit() {
        let ms = 1_000_000;
        let history = vec![
            entry(1, 0, ok(5)), // dies at 10 ms, holding
            entry(2, ms, ok(6)),
            entry(2, 50 * ms, Event::ReleaseInvoke { token: 6 }),
            entry(3, 60 * ms, ok(7)),    // one permit still the dead one's
            entry(2, 2_000 * ms, ok(8)), // both survivors hold: it came back
        ];
        let died = BTreeMap::from([(1, 10 * ms)]);
        let v = check(GrantRule::Permits(2), &history, &died, &[], 0, None);
        assert_eq!(v.permits_back_ms, Some(1_990));
        let leaked = check(GrantRule::Permits(2), &history[..4], &died, &[], 0, None);
        assert_eq!(leaked.permits_back_ms, Some(50), "never back: counted until the history's end");
        assert_eq!(check(GrantRule::Permits(2), &history, &BTreeMap::new(), &[], 0, None).permits_back_ms, None);
    }
}
