//! The conformance suite: the semantics of docs/DESIGN.md as code. Every backend runs the same
//! functions through [`conformance_tests!`](crate::conformance_tests), one named `#[tokio::test]`
//! each, against a [`Harness`] that makes new clients (new sessions) and injects faults.
//!
//! After every test the macro checks that nothing is left on the server.
//!
//! ```
//! // In a backend's integration tests (see tests/tests/conformance_mem.rs):
//! distlock_core::conformance_tests!(async { distlock_core::conformance::MemHarness::new() });
//! # fn main() {}
//! ```

mod cancellation;
mod closing;
mod election;
mod exclusion;
mod fencing;
mod input;
mod liveness;
mod mem_harness;
mod ownership;
mod read_write;
mod semaphore;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

pub use cancellation::*;
pub use closing::*;
pub use election::*;
pub use exclusion::*;
pub use fencing::*;
pub use input::*;
pub use liveness::*;
pub use mem_harness::MemHarness;
pub use ownership::*;
pub use read_write::*;
pub use semaphore::*;

use crate::{DistributedLock, LockError, LockGuard, LockInfo};

/// What the suite needs from a backend's test setup. Each test gets its own harness, whose
/// clients share one namespace (etcd prefix, ZooKeeper chroot, `mem://` server) no other test uses.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A new client with its own session and [`Harness::ttl`]. Panics if it cannot connect.
    async fn client(&self) -> Arc<dyn DistributedLock>;

    /// A new client whose connection the test controls through the returned [`Faults`].
    async fn faulty_client(&self) -> (Arc<dyn DistributedLock>, Box<dyn Faults>);

    /// Builds a client with session TTL `ttl`; bad TTLs must be refused with an error.
    async fn client_with_ttl(&self, ttl: Duration) -> Result<Arc<dyn DistributedLock>, LockError>;

    /// The session TTL of [`Harness::client`]'s clients.
    fn ttl(&self) -> Duration;

    /// Lock requests the server has received from this harness's clients so far (session
    /// keepalives excluded): the measure of round trips per hand-off.
    async fn requests(&self) -> u64;

    /// Deletes the current holder's entry (key, znode) of `name` behind its back, as an operator.
    async fn delete_holder(&self, name: &str);

    /// Entries (keys, znodes, queue entries) left on the server in this harness's namespace.
    async fn leftovers(&self) -> Vec<String>;
}

/// Fault injection on one client's connection.
#[async_trait]
pub trait Faults: Send + Sync {
    /// Cuts the client off the server: nothing gets through in either direction.
    async fn cut(&self);
    /// Restores a cut connection.
    async fn heal(&self);
    /// Ends the client's session on the server now (Curator's `KillSession`, etcd lease revoke).
    async fn expire_session(&self);
    /// Loses the reply to the client's next queuing request after the server acted on it.
    async fn drop_next_reply(&self);
    /// How many replies were lost so far.
    async fn dropped_replies(&self) -> u64;
}

/// How long any single test may run before it counts as hung.
pub const TEST_BOUND: Duration = Duration::from_secs(120);

/// Generates one `#[tokio::test]` per conformance function, each with a fresh harness from
/// `$harness` (an expression evaluating to a future of the harness), and checks afterwards that
/// nothing is left on the server.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            mutual_exclusion_under_contention,
            nested_names_are_separate_locks,
            fifo_order_of_waiters,
            release_wakes_only_the_next_waiter,
            requests_per_handoff_do_not_grow_with_waiters,
            auto_release_when_holder_is_cut_off,
            auto_release_when_holder_session_is_killed,
            an_unconfirmed_release_does_not_keep_the_lock,
            fencing_tokens_increase_across_sessions,
            lost_fires_when_session_expires,
            lost_fires_when_entry_is_deleted,
            short_blip_loses_nothing,
            waiter_whose_session_expires_gets_an_error,
            dropped_lock_future_leaves_nothing,
            dropped_guard_releases_in_background,
            aborted_task_releases_its_guard,
            dropped_release_future_still_releases,
            cancellation_at_the_moment_of_grant_leaves_nothing,
            lost_reply_leaves_one_entry_per_waiter,
            guard_moves_between_tasks,
            local_queue_costs_one_server_waiter,
            reenter_shares_the_hold,
            try_lock_and_timeout_do_not_wait,
            bad_names_are_refused_and_change_nothing,
            bad_ttls_are_refused,
            close_frees_everything_at_once,
            giving_up_leaves_nothing_when_it_returns,
            progress_reports_the_place_in_the_queue,
            inspect_all_lists_the_locks_under_a_prefix,
            election_elects_in_campaign_order,
            proclaim_changes_the_value_and_is_fenced,
            observers_see_every_term_in_order,
            candidate_whose_session_expires_is_never_elected,
            cut_off_leader_learns_before_a_successor_is_elected,
            giving_up_a_campaign_leaves_nothing,
            readers_share_and_a_writer_excludes_everyone,
            read_write_exclusion_under_contention,
            readers_behind_a_waiting_writer_wait_for_it,
            asking_for_the_other_side_of_a_held_name_is_an_error,
            a_dead_readers_or_writers_place_is_freed,
            a_dropped_writer_wait_lets_the_readers_behind_it_in,
            inspect_shows_the_readers_holding_and_the_writer_waiting,
            read_and_write_waits_cancelled_at_the_grant_leave_nothing,
            lost_replies_leave_one_entry_per_reader_and_writer,
            at_most_n_permits_under_contention,
            permits_are_granted_in_queue_order,
            an_out_of_order_release_admits_the_first_waiter,
            a_waiter_leaving_between_does_not_hold_up_the_one_behind,
            a_dead_holders_permit_is_freed,
            clients_that_disagree_on_permits_get_a_clear_error,
            permit_requests_per_grant_do_not_grow_with_waiters,
            inspect_shows_each_permit_held_and_the_waiters,
            permit_waits_cancelled_at_the_grant_leave_nothing,
            lost_replies_leave_one_entry_per_permit,
        );
    };
    (@each $harness:expr; $($test:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let harness = ($harness).await;
                $crate::conformance::run(stringify!($test), &harness, $crate::conformance::$test).await;
            }
        )+
    };
}

/// Runs one conformance function with the [`TEST_BOUND`], then checks that nothing is left.
pub async fn run<'h, H, F, Fut>(name: &str, harness: &'h H, test: F)
where
    H: Harness + 'h,
    F: FnOnce(&'h dyn Harness) -> Fut,
    Fut: Future<Output = ()> + 'h,
{
    let h: &'h dyn Harness = harness;
    if tokio::time::timeout(TEST_BOUND, test(h)).await.is_err() {
        panic!("conformance test {name} did not finish within {TEST_BOUND:?}");
    }
    // Background releases and the session TTL backstop may take a moment.
    let bound = h.ttl() * 3 + Duration::from_secs(5);
    let left = wait_for("the namespace to be empty", bound, || async {
        let left = h.leftovers().await;
        left.is_empty().then_some(()).ok_or(left)
    })
    .await;
    if let Err(left) = left {
        panic!("conformance test {name} left entries on the server: {left:?}");
    }
}

/// Polls `check` until it returns `Ok`, at most `bound`; returns the last `Err` on time-out.
pub async fn wait_for<T, E, F, Fut>(what: &str, bound: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + bound;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => {
                tracing::warn!("gave up waiting for {what} after {bound:?}");
                return Err(last);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until `inspect(name)` satisfies `pred`, at most `bound`; panics with the last state.
pub async fn wait_for_queue(
    client: &dyn DistributedLock,
    name: &str,
    bound: Duration,
    what: &str,
    pred: impl Fn(&LockInfo) -> bool,
) -> LockInfo {
    let result = wait_for(what, bound, || async {
        match client.inspect(name).await {
            Ok(info) if pred(&info) => Ok(info),
            Ok(info) => Err(format!("{info:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    match result {
        Ok(info) => info,
        Err(last) => panic!("timed out after {bound:?} waiting for {what}; last seen: {last}"),
    }
}

/// Waits until the server holds exactly `n` queue entries (the test's namespace is its own).
pub(crate) async fn entries_become(h: &dyn Harness, n: usize, what: &str) {
    let seen = wait_for(what, PROMPTLY, || async {
        let left = h.leftovers().await;
        (left.len() == n).then_some(()).ok_or(left)
    })
    .await;
    if let Err(last) = seen {
        panic!("timed out after {PROMPTLY:?} waiting for {what}; entries: {last:?}");
    }
}

/// A unique lock name for one test.
pub fn unique_name(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("conformance/{base}-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// The bound for anything that should happen "promptly" (a hand-off, a background release).
pub(crate) const PROMPTLY: Duration = Duration::from_secs(10);

/// Awaits `fut` at most `bound`, panicking with `what` on time-out.
pub(crate) async fn within<T>(bound: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(bound, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {bound:?}: {what}"),
    }
}

/// Queues `waiter` for `name` behind `guard` (until `observer` sees it as the one waiter), then
/// releases `guard` and returns the waiter's guard, which must come promptly.
pub(crate) async fn hand_over(
    observer: &dyn DistributedLock,
    name: &str,
    guard: LockGuard,
    waiter: Arc<dyn DistributedLock>,
) -> LockGuard {
    let name_owned = name.to_owned();
    let waiting = tokio::spawn(async move { waiter.lock(&name_owned).await.expect("the waiter's lock") });
    wait_for_queue(observer, name, PROMPTLY, "the waiter to queue", |i| i.waiters.len() == 1).await;
    guard.release().await.expect("release");
    within(PROMPTLY, "the waiter acquires", waiting).await.expect("waiter task")
}
