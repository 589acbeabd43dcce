//! The background deletes of a session's queue entries that are still in flight, by lock, so
//! that a session never queues for a lock again while the entry of its cancelled wait is still
//! there: one entry per waiter, always.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::backend::SessionLife;

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
