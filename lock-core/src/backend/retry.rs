//! Retrying one server request the same way on every backend: a timeout per attempt, backoff,
//! an overall budget, and never after the session ended. Backends make the retried requests
//! idempotent (a retried create finds its own entry, a retried delete is fenced), because a
//! request that timed out may have been applied.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::{backend::SessionLife, LockError};

/// How long one attempt and all attempts together may take.
///
/// ```
/// use std::time::Duration;
/// let policy = distlock_core::backend::RetryPolicy::new(Duration::from_secs(2));
/// assert_eq!(policy.budget, Duration::from_secs(6));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The bound on one attempt.
    pub attempt_timeout: Duration,
    /// The bound on all attempts together.
    pub budget: Duration,
}

impl RetryPolicy {
    /// Attempts of `attempt_timeout` each, within three of them in all.
    ///
    /// ```
    /// let p = distlock_core::backend::RetryPolicy::new(std::time::Duration::from_secs(1));
    /// assert_eq!(p.attempt_timeout, std::time::Duration::from_secs(1));
    /// ```
    pub fn new(attempt_timeout: Duration) -> Self {
        RetryPolicy { attempt_timeout, budget: attempt_timeout * 3 }
    }
}

/// What a failed attempt means.
///
/// ```
/// let outcome: distlock_core::backend::Attempt<&str> = distlock_core::backend::Attempt::Transient("connection reset");
/// # drop(outcome);
/// ```
#[derive(Debug)]
pub enum Attempt<E> {
    /// The request may or may not have been applied; trying again can succeed.
    Transient(E),
    /// Trying again cannot help.
    Fatal(E),
}

/// Runs `attempt` until it succeeds, fails fatally, the budget is spent, or the session ends.
/// `classify` sorts errors; `to_error` turns the last one (`None`: the attempt timed out) into a
/// [`LockError`]. `count` is called once per attempt, for request counters.
///
/// # Cancel safety
/// Cancel safe if `attempt` is: dropping it drops the attempt in flight.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use distlock_core::{LockError, backend::{retry_request, Attempt, RetryPolicy, SessionLife}};
///
/// let life = SessionLife::new("example", Duration::from_secs(10));
/// let mut calls = 0;
/// let result: Result<u32, LockError> = retry_request(
///     &life,
///     RetryPolicy::new(Duration::from_millis(100)),
///     |e: &&str| if *e == "reset" { Attempt::Transient(()) } else { Attempt::Fatal(()) },
///     |_e: Option<&str>| LockError::Closed,
///     || {},
///     || { calls += 1; let n = calls; async move { if n < 3 { Err("reset") } else { Ok(n) } } },
///     "example request",
/// ).await;
/// assert_eq!(result.unwrap(), 3);
/// # }
/// ```
pub async fn retry_request<T, E, F, Fut>(
    life: &SessionLife,
    policy: RetryPolicy,
    classify: impl Fn(&E) -> Attempt<()>,
    to_error: impl Fn(Option<E>) -> LockError,
    count: impl Fn(),
    mut attempt: F,
    op: &str,
) -> Result<T, LockError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    let budget = Instant::now() + policy.budget;
    let mut backoff = Duration::from_millis(20);
    loop {
        if life.is_ended() {
            return Err(LockError::SessionExpired { during: op.to_owned() });
        }
        count();
        let error = match tokio::time::timeout(policy.attempt_timeout, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => match classify(&e) {
                Attempt::Fatal(()) => return Err(to_error(Some(e))),
                Attempt::Transient(()) => Some(e),
            },
            Err(_) => None,
        };
        if Instant::now() + backoff >= budget {
            return Err(to_error(error));
        }
        tracing::debug!(op, ?error, "request failed; retrying");
        crate::metrics::retry(life.backend());
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = life.ended() => {}
        }
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}
