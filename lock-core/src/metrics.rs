//! What distlock records through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, on by default): every metric's name, and which lock names get a `name` label. The
//! library only records; an application that wants the figures installs a recorder or exporter
//! (`metrics-exporter-prometheus`, say). With no recorder installed, recording does nothing, and
//! without the feature it is not compiled in. `docs/OPERATIONS.md` describes each metric, its
//! labels and what to alert on.
//!
//! Every metric has the labels `backend` (`mem`, `etcd`, `zookeeper`, `redis`); those of an acquisition
//! have `recipe` too (`lock`, `election`, `read`, `write`, `permit`), and a `name` label for
//! the names a client was told to label ([`MetricNames`]): names can be unbounded, so by default
//! the figures of all names are added up.
//!
//! ```
//! use distlock_core::metrics::{MetricNames, ACQUISITIONS};
//! assert_eq!(ACQUISITIONS, "distlock_acquisitions_total");
//! let names = MetricNames::parse("jobs/,payments/settle")?;
//! assert!(names.labels("jobs/nightly"));
//! assert!(!names.labels("other"));
//! # Ok::<(), distlock_core::LockError>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Recipe;
use crate::{LockError, LockName, LossReason};

/// Histogram, seconds: from the call to `lock` (or any acquire) until it was granted.
pub const ACQUIRE_WAIT: &str = "distlock_acquire_wait_seconds";
/// Histogram, seconds: from the grant until the release began (or the hold ended otherwise).
pub const HOLD_TIME: &str = "distlock_hold_seconds";
/// Histogram, seconds: from the start of a release until the server confirmed it (or it failed).
pub const RELEASE_TIME: &str = "distlock_release_seconds";
/// Counter: acquisitions granted.
pub const ACQUISITIONS: &str = "distlock_acquisitions_total";
/// Counter: `try_lock` (and the other `try_` calls) that found the name taken.
pub const TRY_MISSES: &str = "distlock_try_misses_total";
/// Counter: acquisitions with a timeout that ran out before the grant.
pub const TIMEOUTS: &str = "distlock_acquire_timeouts_total";
/// Counter: acquisitions whose future was dropped before it finished.
pub const CANCELLATIONS: &str = "distlock_acquire_cancellations_total";
/// Counter: acquisitions that failed with an error.
pub const ACQUIRE_ERRORS: &str = "distlock_acquire_errors_total";
/// Counter, label `reason`: holds lost (`session_expired`, `entry_deleted`, `server_silent`,
/// `client_closed`).
pub const LOSSES: &str = "distlock_losses_total";
/// Counter: releases the server did not confirm (retried in the background).
pub const RELEASES_UNCONFIRMED: &str = "distlock_releases_unconfirmed_total";
/// Counter, label `kind` (the distlock operation the request served: `acquire`, `release`,
/// `inspect`, `observe`, `proclaim`, `background`): requests sent to the server, keepalives
/// excluded.
pub const SERVER_REQUESTS: &str = "distlock_server_requests_total";
/// Counter: requests sent again after an ambiguous or failed reply.
pub const RETRIES: &str = "distlock_request_retries_total";
/// Gauge: holds of this process's clients now.
pub const HOLDS: &str = "distlock_holds";
/// Gauge: acquisitions of this process's clients waiting now.
pub const WAITERS: &str = "distlock_waiters";
/// Gauge, label `state` (`connected`, `suspended`): this process's live sessions in each state.
pub const SESSIONS: &str = "distlock_sessions";
/// Counter, label `how` (`expired`, `closed`): sessions that ended.
pub const SESSION_ENDS: &str = "distlock_session_ends_total";
/// Gauge, a ratio: time since the server last acknowledged a keepalive, over the TTL, at the
/// latest keepalive attempt; the largest among this process's live sessions that are not yet
/// past their deadline (a session past it has lost its holds, counted in [`LOSSES`]).
pub const KEEPALIVE_AGE: &str = "distlock_keepalive_age_ratio";

/// What kind of metric a name is; histograms are in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of durations, in seconds.
    Histogram,
}

/// Every metric distlock records, with its kind and description: what exporters show, and what
/// documentation checks and dashboards list.
pub const ALL: &[(&str, MetricKind, &str)] = &[
    (ACQUIRE_WAIT, MetricKind::Histogram, "Time from an acquire call to its grant."),
    (HOLD_TIME, MetricKind::Histogram, "Time from a grant to the start of its release."),
    (RELEASE_TIME, MetricKind::Histogram, "Time a release took, confirmed or not."),
    (ACQUISITIONS, MetricKind::Counter, "Acquisitions granted."),
    (TRY_MISSES, MetricKind::Counter, "try_ calls that found the name taken."),
    (TIMEOUTS, MetricKind::Counter, "Acquisitions whose timeout ran out before the grant."),
    (CANCELLATIONS, MetricKind::Counter, "Acquisitions dropped before they finished."),
    (ACQUIRE_ERRORS, MetricKind::Counter, "Acquisitions that failed with an error."),
    (LOSSES, MetricKind::Counter, "Holds lost, by reason."),
    (RELEASES_UNCONFIRMED, MetricKind::Counter, "Releases the server did not confirm."),
    (SERVER_REQUESTS, MetricKind::Counter, "Requests sent to the server, by the operation they served."),
    (RETRIES, MetricKind::Counter, "Requests sent again after an ambiguous or failed reply."),
    (HOLDS, MetricKind::Gauge, "Holds of this process's clients."),
    (WAITERS, MetricKind::Gauge, "Acquisitions of this process's clients waiting."),
    (SESSIONS, MetricKind::Gauge, "Live sessions of this process, by state."),
    (SESSION_ENDS, MetricKind::Counter, "Sessions that ended, expired or closed."),
    (KEEPALIVE_AGE, MetricKind::Gauge, "Time since the last acknowledged keepalive over the TTL, worst session."),
];

/// The lock names a client labels its metrics with: each entry names a lock and every lock
/// below it (`jobs/nightly` labels `jobs/nightly` and `jobs/nightly/eu`; `jobs/` every lock
/// below `jobs`). Empty by default: no name label. The URL parameter `metrics_names` (a comma
/// separated list) sets it for [`connect`](https://docs.rs/distlock/latest/distlock/fn.connect.html).
///
/// ```
/// use distlock_core::metrics::MetricNames;
/// let names = MetricNames::parse("jobs/nightly, orders/")?;
/// assert!(names.labels("jobs/nightly") && names.labels("jobs/nightly/eu") && names.labels("orders/42"));
/// assert!(!names.labels("jobs/nightly-2") && !names.labels("orders"));
/// assert!(MetricNames::parse("jobs//x").is_err());
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricNames {
    /// Names (matching themselves and below) and prefixes ending in `/` (matching below).
    entries: Arc<[String]>,
}

impl MetricNames {
    /// The names in a comma-separated list; blanks around entries are ignored. A bad entry is
    /// [`LockError::InvalidConfig`] naming it.
    ///
    /// ```
    /// assert!(distlock_core::metrics::MetricNames::parse("").unwrap().is_empty());
    /// ```
    pub fn parse(list: &str) -> Result<Self, LockError> {
        let mut entries = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let name = entry.strip_suffix('/').unwrap_or(entry);
            LockName::new(name).map_err(|e| {
                LockError::invalid_config(
                    "metrics_names",
                    format!("{entry:?} is not a lock name or a prefix ending in '/': {e}"),
                )
            })?;
            entries.push(entry.to_owned());
        }
        Ok(MetricNames { entries: entries.into() })
    }

    /// Whether no name is labelled.
    ///
    /// ```
    /// assert!(distlock_core::metrics::MetricNames::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the metrics of lock `name` carry its name.
    ///
    /// ```
    /// let names = distlock_core::metrics::MetricNames::parse("a/")?;
    /// assert!(names.labels("a/b"));
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn labels(&self, name: &str) -> bool {
        self.entries.iter().any(|entry| match entry.strip_suffix('/') {
            Some(dir) => name.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/')),
            None => name.strip_prefix(entry.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        })
    }
}

/// Whether a recorder is installed (a local one, or the global one). The `metrics` crate has no
/// such query; its stand-in when none is installed is the zero-sized `NoopRecorder`, so a
/// zero-sized recorder counts as none. Without a recorder distlock builds no labels, reads no
/// clock for metrics and makes no metric calls: its paths pay this check and nothing more.
pub(crate) fn recording() -> bool {
    #[cfg(feature = "metrics")]
    return metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0);
    #[cfg(not(feature = "metrics"))]
    false
}

/// The labels of one acquisition's metrics: backend, recipe and perhaps the name; nothing if
/// no recorder was installed when the acquisition began (its metrics are then all skipped, so
/// a gauge it raises is also the one it lowers).
#[derive(Clone, Debug)]
pub(crate) struct HoldLabels {
    #[cfg(feature = "metrics")]
    labels: Option<Arc<[metrics::Label]>>,
}

impl HoldLabels {
    pub(crate) fn new(backend: &'static str, recipe: Recipe, name: &LockName, names: &MetricNames) -> Self {
        #[cfg(feature = "metrics")]
        {
            if !recording() {
                return HoldLabels { labels: None };
            }
            let recipe = recipe_label(recipe);
            let mut labels = vec![metrics::Label::new("backend", backend), metrics::Label::new("recipe", recipe)];
            if !names.is_empty() && names.labels(name.as_str()) {
                labels.push(metrics::Label::new("name", name.as_str().to_owned()));
            }
            HoldLabels { labels: Some(labels.into()) }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (backend, recipe, name, names);
            HoldLabels {}
        }
    }

    /// Whether these metrics are recorded (a recorder was installed when the acquisition began).
    pub(crate) fn is_recording(&self) -> bool {
        #[cfg(feature = "metrics")]
        return self.labels.is_some();
        #[cfg(not(feature = "metrics"))]
        false
    }

    /// An acquisition begins to wait: counted among the waiters until the returned record ends.
    pub(crate) fn wait_started(&self) -> WaitRecord {
        #[cfg(feature = "metrics")]
        if let Some(labels) = &self.labels {
            metrics::gauge!(WAITERS, labels.iter()).increment(1.0);
        }
        // Timed only where recorded: a clock read is a cost too.
        let started = self.is_recording().then(Instant::now);
        WaitRecord { labels: self.clone(), started, ended: false }
    }

    /// A hold begins (a guard is made): counted among the holds until [`HoldLabels::hold_ended`].
    pub(crate) fn hold_started(&self) {
        #[cfg(feature = "metrics")]
        if let Some(labels) = &self.labels {
            metrics::gauge!(HOLDS, labels.iter()).increment(1.0);
        }
    }

    /// A hold ends: how long it lasted.
    pub(crate) fn hold_ended(&self, held: Duration) {
        #[cfg(feature = "metrics")]
        if let Some(labels) = &self.labels {
            metrics::gauge!(HOLDS, labels.iter()).decrement(1.0);
            metrics::histogram!(HOLD_TIME, labels.iter()).record(held.as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = held;
    }

    /// A release finished after `took`, confirmed or not.
    pub(crate) fn released(&self, took: Duration, confirmed: bool) {
        #[cfg(feature = "metrics")]
        if let Some(labels) = &self.labels {
            metrics::histogram!(RELEASE_TIME, labels.iter()).record(took.as_secs_f64());
            if !confirmed {
                metrics::counter!(RELEASES_UNCONFIRMED, labels.iter()).increment(1);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (took, confirmed);
    }

    /// A hold was lost.
    pub(crate) fn lost(&self, reason: LossReason) {
        #[cfg(feature = "metrics")]
        if let Some(labels) = &self.labels {
            let mut labels = labels.to_vec();
            labels.push(metrics::Label::new("reason", loss_label(reason)));
            metrics::counter!(LOSSES, labels).increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = reason;
    }
}

/// How a recipe reads as a label.
#[cfg(feature = "metrics")]
fn recipe_label(recipe: Recipe) -> &'static str {
    match recipe {
        Recipe::Lock => "lock",
        Recipe::Election => "election",
        Recipe::Read => "read",
        Recipe::Write => "write",
        Recipe::Permit(_) => "permit",
    }
}

/// How a loss reason reads as a label.
#[cfg(feature = "metrics")]
fn loss_label(reason: LossReason) -> &'static str {
    match reason {
        LossReason::SessionExpired => "session_expired",
        LossReason::EntryDeleted => "entry_deleted",
        LossReason::ServerSilent => "server_silent",
        LossReason::ClientClosed => "client_closed",
    }
}

/// One acquisition's wait: among the waiters until it ends; dropped unended, it counts as
/// cancelled.
#[derive(Debug)]
pub(crate) struct WaitRecord {
    labels: HoldLabels,
    /// When the wait began, if recorded.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    started: Option<Instant>,
    ended: bool,
}

impl WaitRecord {
    /// The labels the wait is recorded under.
    pub(crate) fn labels(&self) -> &HoldLabels {
        &self.labels
    }

    /// Ends the wait once (later calls do nothing), counting it under `counter`.
    fn end(&mut self, counter: &'static str) -> bool {
        if std::mem::replace(&mut self.ended, true) {
            return false;
        }
        #[cfg(feature = "metrics")]
        if let Some(labels) = &self.labels.labels {
            metrics::gauge!(WAITERS, labels.iter()).decrement(1.0);
            metrics::counter!(counter, labels.iter()).increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = counter;
        true
    }

    /// Granted: an acquisition, and the wait's time.
    pub(crate) fn granted(&mut self) {
        let ended_now = self.end(ACQUISITIONS);
        #[cfg(feature = "metrics")]
        if let (true, Some(labels), Some(started)) = (ended_now, &self.labels.labels, self.started) {
            metrics::histogram!(ACQUIRE_WAIT, labels.iter()).record(started.elapsed().as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = ended_now;
    }

    /// A `try_` call found the name taken.
    pub(crate) fn missed(&mut self) {
        let _ = self.end(TRY_MISSES);
    }

    /// The timeout ran out first.
    pub(crate) fn timed_out(&mut self) {
        let _ = self.end(TIMEOUTS);
    }

    /// The acquisition failed with an error.
    pub(crate) fn failed(&mut self) {
        let _ = self.end(ACQUIRE_ERRORS);
    }
}

impl Drop for WaitRecord {
    fn drop(&mut self) {
        let _ = self.end(CANCELLATIONS);
    }
}

tokio::task_local! {
    /// The distlock operation the current task's server requests serve.
    static OPERATION: &'static str;
}

/// Runs `future` with its server requests counted as serving `operation` (where recorded).
pub(crate) async fn serving<F: std::future::Future>(operation: &'static str, future: F) -> F::Output {
    if recording() {
        OPERATION.scope(operation, future).await
    } else {
        future.await
    }
}

/// Counts one request to the server of `backend`, by the operation the current task serves
/// (`background` outside any).
///
/// ```
/// distlock_core::metrics::server_request("etcd");
/// ```
pub fn server_request(backend: &'static str) {
    #[cfg(feature = "metrics")]
    if recording() {
        let kind = OPERATION.try_with(|operation| *operation).unwrap_or("background");
        metrics::counter!(SERVER_REQUESTS, "backend" => backend, "kind" => kind).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = backend;
}

/// Counts one request sent again after an ambiguous or failed reply.
pub(crate) fn retry(backend: &'static str) {
    #[cfg(feature = "metrics")]
    if recording() {
        metrics::counter!(RETRIES, "backend" => backend).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = backend;
}

/// Registers each metric's unit and description with the recorder installed now (if any):
/// exporters show them. [`crate::LockClient::new`] calls it.
pub(crate) fn describe() {
    #[cfg(feature = "metrics")]
    for &(name, kind, help) in ALL {
        match kind {
            MetricKind::Counter => metrics::describe_counter!(name, help),
            MetricKind::Gauge => metrics::describe_gauge!(name, help),
            MetricKind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}

/// Session health: live sessions by state, ends, and the worst keepalive age.
pub(crate) mod sessions {
    #[cfg(feature = "metrics")]
    use std::collections::HashMap;
    #[cfg(feature = "metrics")]
    use std::sync::{atomic::AtomicU64, atomic::Ordering, Mutex};

    use crate::SessionState;

    /// The label of a live state; `None` for the final ones.
    #[cfg(feature = "metrics")]
    fn live_label(state: SessionState) -> Option<&'static str> {
        match state {
            SessionState::Connected => Some("connected"),
            SessionState::Suspended => Some("suspended"),
            SessionState::Expired | SessionState::Closed => None,
        }
    }

    /// A session moved from `from` (`None`: it is new) to `to`. Called only for sessions opened
    /// while a recorder was installed ([`super::recording`]), so the gauge's raises and drops pair.
    pub(crate) fn moved(backend: &'static str, from: Option<SessionState>, to: SessionState) {
        #[cfg(feature = "metrics")]
        {
            if let Some(state) = from.and_then(live_label) {
                metrics::gauge!(super::SESSIONS, "backend" => backend, "state" => state).decrement(1.0);
            }
            match (live_label(to), to) {
                (Some(state), _) => {
                    metrics::gauge!(super::SESSIONS, "backend" => backend, "state" => state).increment(1.0)
                }
                (None, SessionState::Expired) => {
                    metrics::counter!(super::SESSION_ENDS, "backend" => backend, "how" => "expired").increment(1)
                }
                (None, _) => {
                    metrics::counter!(super::SESSION_ENDS, "backend" => backend, "how" => "closed").increment(1)
                }
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (backend, from, to);
    }

    /// A session was dropped in state `state` (a live one leaves the gauge).
    pub(crate) fn dropped(backend: &'static str, state: SessionState) {
        #[cfg(feature = "metrics")]
        if let Some(state) = live_label(state) {
            metrics::gauge!(super::SESSIONS, "backend" => backend, "state" => state).decrement(1.0);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (backend, state);
    }

    #[cfg(feature = "metrics")]
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    /// Each live session's keepalive age ratio, by backend and session.
    #[cfg(feature = "metrics")]
    static AGES: Mutex<Option<HashMap<(&'static str, u64), f64>>> = Mutex::new(None);

    /// A session's place among those whose keepalive age is reported.
    #[derive(Debug)]
    pub(crate) struct KeepaliveAge {
        #[cfg(feature = "metrics")]
        key: (&'static str, u64),
    }

    impl KeepaliveAge {
        pub(crate) fn new(backend: &'static str) -> Self {
            #[cfg(feature = "metrics")]
            {
                KeepaliveAge { key: (backend, NEXT_ID.fetch_add(1, Ordering::Relaxed)) }
            }
            #[cfg(not(feature = "metrics"))]
            {
                let _ = backend;
                KeepaliveAge {}
            }
        }

        /// The session's age ratio now is `ratio` (`None`: it ended, and leaves the report).
        pub(crate) fn report(&self, ratio: Option<f64>) {
            #[cfg(feature = "metrics")]
            {
                let recording = super::recording();
                if ratio.is_some() && !recording {
                    return;
                }
                let mut ages = AGES.lock().unwrap_or_else(|p| p.into_inner());
                let ages = ages.get_or_insert_with(HashMap::new);
                match ratio {
                    Some(ratio) => ages.insert(self.key, ratio),
                    None => ages.remove(&self.key),
                };
                let backend = self.key.0;
                let worst = ages.iter().filter(|((b, _), _)| *b == backend).map(|(_, r)| *r).fold(0.0, f64::max);
                if recording {
                    metrics::gauge!(super::KEEPALIVE_AGE, "backend" => backend).set(worst);
                }
            }
            #[cfg(not(feature = "metrics"))]
            let _ = ratio;
        }
    }

    impl Drop for KeepaliveAge {
        fn drop(&mut self) {
            self.report(None);
        }
    }
}
