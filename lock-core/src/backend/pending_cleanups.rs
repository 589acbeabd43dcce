//! The background deletes of a session's queue entries that are still in flight, by lock, so
//! that a session never queues for a lock again while the entry of its cancelled wait, or of a
//! release the server did not confirm, is still there: one entry per waiter, always. A delete
//! in flight is retried until it is confirmed or the session ends (Curator's "guaranteed"
//! delete): a session that can still reach the server removes its entry, and one that cannot
//! loses the entry with its session.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{backend::SessionLife, LockError};

/// The pause between two failed tries of a background delete (each try has its own retries).
const BACKGROUND_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The in-flight background deletes of one session, keyed by lock (a key, a directory).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use distlock_core::{backend::{PendingCleanups, SessionLife}};
/// use std::time::Duration;
///
/// let life = SessionLife::new("mem", Duration::from_secs(5));
/// let pending = PendingCleanups::default();
/// let cleanup = pending.start("locks/a");
/// assert!(pending.is_pending("locks/a"));
/// let waiting = tokio::spawn({
///     let pending = std::sync::Arc::new(pending);
///     let life = std::sync::Arc::new(life);
///     async move {
///         pending.wait("locks/a", &life).await; // returns once the delete is done
///         pending.is_pending("locks/a")
///     }
/// });
/// cleanup.finish();
/// assert!(!waiting.await.unwrap());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct PendingCleanups {
    pending: Mutex<HashMap<String, Vec<CancellationToken>>>,
}

/// One background delete in flight: call [`Cleanup::finish`] when it is done (dropping it
/// finishes it too, so a panicking or cancelled delete never blocks the lock for good).
#[derive(Debug)]
#[must_use = "finish the cleanup when the delete is done"]
pub struct Cleanup {
    done: CancellationToken,
}

impl Cleanup {
    /// Marks the delete as done.
    pub fn finish(self) {}

    /// Runs `delete` in a background task until it is confirmed, the session ends
    /// ([`LockError::SessionExpired`] or [`LockError::Closed`]: the entry went with it), or it
    /// fails in a way no retry mends (logged), and then finishes. Each call of `delete` is one
    /// request with its own retries; a retryable failure is tried again after a short pause,
    /// for as long as the session lives. `entry` names the entry in the logs. Outside a Tokio
    /// runtime it finishes at once (the session's expiry removes the entry).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
    /// use std::time::Duration;
    /// use distlock_core::{LockError, backend::{PendingCleanups, SessionLife}};
    ///
    /// let (pending, life) = (PendingCleanups::default(), SessionLife::new("mem", Duration::from_secs(5)));
    /// let tries = Arc::new(AtomicU32::new(0));
    /// pending.start("locks/a").retry_until_done("locks/a/1".into(), {
    ///     let tries = tries.clone();
    ///     move || {
    ///         let n = tries.fetch_add(1, Ordering::SeqCst);
    ///         async move {
    ///             if n == 0 {
    ///                 Err(LockError::Unreachable { endpoints: "e".into(), what: "delete".into(), source: None })
    ///             } else {
    ///                 Ok(())
    ///             }
    ///         }
    ///     }
    /// });
    /// pending.wait("locks/a", &life).await; // the second try confirmed it
    /// assert_eq!(tries.load(Ordering::SeqCst), 2);
    /// # }
    /// ```
    pub fn retry_until_done<F, Fut>(self, entry: String, mut delete: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), LockError>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            loop {
                match delete().await {
                    Ok(()) => tracing::debug!(%entry, "entry deleted in the background"),
                    Err(LockError::SessionExpired { .. } | LockError::Closed) => {
                        tracing::debug!(%entry, "the session ended, and the entry with it")
                    }
                    Err(error) if error.is_retryable() => {
                        tracing::debug!(%entry, %error, "background delete failed: trying again");
                        tokio::time::sleep(BACKGROUND_RETRY_PAUSE).await;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%entry, %error, "could not delete the entry; it goes when the session ends")
                    }
                }
                break;
            }
            self.finish();
        });
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

impl PendingCleanups {
    /// Marks a background delete under `lock` as in flight until the returned [`Cleanup`] is
    /// finished or dropped.
    pub fn start(&self, lock: &str) -> Cleanup {
        let done = CancellationToken::new();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let tokens = pending.entry(lock.to_owned()).or_default();
        tokens.retain(|t| !t.is_cancelled());
        tokens.push(done.clone());
        Cleanup { done }
    }

    /// Whether any background delete of the session is still in flight (a check that needs no
    /// lock's name, for paths where naming it costs something).
    ///
    /// ```
    /// let pending = distlock_core::backend::PendingCleanups::default();
    /// assert!(!pending.any_pending());
    /// let cleanup = pending.start("locks/a");
    /// assert!(pending.any_pending());
    /// cleanup.finish();
    /// assert!(!pending.any_pending());
    /// ```
    pub fn any_pending(&self) -> bool {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.values().flatten().any(|t| !t.is_cancelled())
    }

    /// Whether a background delete under `lock` is still in flight.
    pub fn is_pending(&self, lock: &str) -> bool {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.get(lock).is_some_and(|tokens| tokens.iter().any(|t| !t.is_cancelled()))
    }

    /// Waits until no background delete under `lock` is in flight, or the session ends (its
    /// entries go with it then).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn wait(&self, lock: &str, life: &SessionLife) {
        let tokens: Vec<CancellationToken> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get_mut(lock) {
                Some(tokens) => {
                    tokens.retain(|t| !t.is_cancelled());
                    if tokens.is_empty() {
                        pending.remove(lock);
                        return;
                    }
                    tokens.clone()
                }
                None => return,
            }
        };
        for token in tokens {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = life.ended() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wait_covers_every_cleanup_in_flight_not_just_the_latest() {
        let life = Arc::new(SessionLife::new("mem", Duration::from_secs(5)));
        let pending = Arc::new(PendingCleanups::default());
        let first = pending.start("l");
        let second = pending.start("l");
        second.finish();
        let waiter = tokio::spawn({
            let (pending, life) = (pending.clone(), life.clone());
            async move { pending.wait("l", &life).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the first delete is still in flight");
        drop(first); // a dropped cleanup counts as finished
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("done").expect("task");
        assert!(!pending.is_pending("l"));
        pending.wait("other", &life).await; // nothing pending: returns at once
    }

    #[tokio::test]
    async fn the_end_of_the_session_ends_the_wait() {
        let life = Arc::new(SessionLife::new("mem", Duration::from_secs(5)));
        let pending = Arc::new(PendingCleanups::default());
        let _stuck = pending.start("l");
        let waiter = tokio::spawn({
            let (pending, life) = (pending.clone(), life.clone());
            async move { pending.wait("l", &life).await }
        });
        life.expire();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("done").expect("task");
    }
}
