//! `LockGuard`: proof of holding a lock. Owns the hold, feels like tokio's `OwnedMutexGuard`
//! (`#[must_use]`, movable between tasks, released on drop), and adds what a distributed lock
//! needs: the fencing token, the lost signal and explicit reentrancy.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{ServerHold, ServerRelease};
use crate::local_queue::LocalTurn;
use crate::metrics::{serving, HoldLabels};
use crate::{backend::LossSignal, FencingToken, LockError, LockName, LossReason};

/// Proof that this client holds a lock, with the hold's [`FencingToken`].
///
/// Dropping the last guard of a hold releases the lock in the background; [`LockGuard::release`]
/// does the same and waits for the server's answer. Guards are `Send + Sync + 'static`: move
/// them between tasks freely. [`LockGuard::reenter`] makes another guard for the same hold.
///
/// The lock can be lost while held (session expiry, network cut longer than the TTL, the key
/// deleted by an operator): watch [`LockGuard::lost`] and stop writing when it fires.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use distlock_core::{DistributedLock, mem::MemLocks};
///
/// let locks = MemLocks::connect_default()?;
/// let guard = locks.lock("jobs/nightly-report").await?;
/// println!("holding {} with token {}", guard.name(), guard.fencing_token());
/// tokio::select! {
///     _ = async { /* the work, writing with guard.fencing_token() */ } => {}
///     reason = guard.lost() => println!("lock lost: {reason}; stop writing"),
/// }
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard {
    hold: Arc<Hold>,
}

#[derive(Debug)]
struct Hold {
    name: LockName,
    token: FencingToken,
    loss: LossSignal,
    acquired_at: Instant,
    release: Mutex<Option<PendingRelease>>,
    /// The labels of the hold's metrics.
    labels: HoldLabels,
}

/// What releasing needs; taken exactly once, by `release` or by `Drop`.
struct PendingRelease {
    server: Box<dyn ServerRelease>,
    local_turn: LocalTurn,
    runtime: Handle,
}

impl std::fmt::Debug for PendingRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingRelease")
    }
}

impl LockGuard {
    pub(crate) fn new(
        name: LockName,
        hold: ServerHold,
        local_turn: LocalTurn,
        runtime: Handle,
        labels: HoldLabels,
    ) -> Self {
        let ServerHold { token, loss, release, proclaim: _ } = hold;
        labels.hold_started();
        loss.count_in_metrics(labels.clone());
        LockGuard {
            hold: Arc::new(Hold {
                name,
                token,
                loss,
                acquired_at: Instant::now(),
                release: Mutex::new(Some(PendingRelease { server: release, local_turn, runtime })),
                labels,
            }),
        }
    }

    /// The lock's name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let guard = MemLocks::connect_default()?.lock("a").await?;
    /// assert_eq!(guard.name().as_str(), "a");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &LockName {
        &self.hold.name
    }

    /// The fencing token of this hold: strictly greater than every earlier holder's.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let locks = MemLocks::connect_default()?;
    /// let first = locks.lock("b").await?;
    /// let t1 = first.fencing_token();
    /// first.release().await?;
    /// assert!(locks.lock("b").await?.fencing_token() > t1);
    /// # Ok(()) }
    /// ```
    pub fn fencing_token(&self) -> FencingToken {
        self.hold.token
    }

    /// Whether the lock is still trusted: not lost.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let guard = MemLocks::connect_default()?.lock("c").await?;
    /// assert!(guard.is_held());
    /// # Ok(()) }
    /// ```
    pub fn is_held(&self) -> bool {
        !self.hold.loss.is_fired()
    }

    /// How long this hold has lasted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let guard = MemLocks::connect_default()?.lock("d").await?;
    /// assert!(guard.held_for() < std::time::Duration::from_secs(60));
    /// # Ok(()) }
    /// ```
    pub fn held_for(&self) -> Duration {
        self.hold.acquired_at.elapsed()
    }

    /// Resolves when the lock can no longer be trusted, with the reason. It fires no later than
    /// the moment the server could hand the lock to someone else. Never resolves for a hold that
    /// is released normally.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting. Use it in `select!` freely.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let locks = MemLocks::connect_default()?;
    /// let guard = locks.lock("e").await?;
    /// locks.backend().kill_session(); // like Curator's KillSession, for tests
    /// let reason = guard.lost().await;
    /// assert_eq!(reason, distlock_core::LossReason::SessionExpired);
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) -> LossReason {
        self.hold.loss.fired().await
    }

    /// Why the hold was lost, if it was.
    pub(crate) fn lost_reason(&self) -> Option<LossReason> {
        self.hold.loss.reason()
    }

    /// A token cancelled when the lock is lost: hand it to child tasks that must stop then.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let guard = MemLocks::connect_default()?.lock("f").await?;
    /// let stop = guard.lost_token();
    /// let worker = tokio::spawn(async move { stop.cancelled().await });
    /// # drop(worker);
    /// # Ok(()) }
    /// ```
    pub fn lost_token(&self) -> CancellationToken {
        self.hold.loss.cancellation_token()
    }

    /// Another guard for the same hold, with the same fencing token (explicit reentrancy). The
    /// lock is released when the last guard of the hold is released or dropped. Fails with
    /// [`LockError::Lost`] if the hold is already lost.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let guard = MemLocks::connect_default()?.lock("g").await?;
    /// let inner = guard.reenter()?;
    /// assert_eq!(inner.fencing_token(), guard.fencing_token());
    /// drop(guard);            // still held through `inner`
    /// assert!(inner.is_held());
    /// inner.release().await?; // now released
    /// # Ok(()) }
    /// ```
    pub fn reenter(&self) -> Result<LockGuard, LockError> {
        if let Some(reason) = self.hold.loss.reason() {
            return Err(self.hold.lost_error(reason));
        }
        tracing::debug!(lock = %self.hold.name, token = self.hold.token.get(), "lock reentered");
        Ok(LockGuard { hold: self.hold.clone() })
    }

    /// Releases the lock and waits for the server to confirm.
    ///
    /// If other guards of the same hold exist ([`LockGuard::reenter`]), only this guard is given
    /// up and `Ok(())` returns at once. Errors: [`LockError::Lost`] if the lock was lost before
    /// the release (the work done under it may have overlapped with another holder; the server
    /// entry is still cleaned up); [`LockError::ReleaseUnconfirmed`] if the server did not
    /// confirm the delete (it is retried in the background; the lock is freed at the latest when
    /// the session ends).
    ///
    /// # Cancel safety
    /// Cancel safe: the release completes even if this future is dropped (what is left of it
    /// runs in a task of the runtime the lock was acquired on); the next local waiter goes on
    /// only after the server delete finished.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use distlock_core::{DistributedLock, mem::MemLocks};
    /// let locks = MemLocks::connect_default()?;
    /// locks.lock("h").await?.release().await?;
    /// assert!(locks.inspect("h").await?.is_free());
    /// # Ok(()) }
    /// ```
    pub async fn release(self) -> Result<(), LockError> {
        let Some(hold) = Arc::into_inner(self.hold) else {
            return Ok(()); // another guard of the same hold keeps it
        };
        let lost_before = hold.loss.reason();
        let result = match hold.take_release() {
            // On a runtime: here, on our task.
            Some((release, runtime)) if Handle::try_current().is_ok() => {
                ReleaseInFlight { release: Some(release), runtime }.await
            }
            // Awaited outside any runtime: on the hold's.
            Some((release, runtime)) => runtime.spawn(release).await.unwrap_or_else(|join| {
                Err(LockError::ReleaseUnconfirmed {
                    name: hold.name.to_string(),
                    token: hold.token,
                    backstop: Duration::ZERO,
                    source: Some(Box::new(join)),
                })
            }),
            None => Ok(()),
        };
        match lost_before {
            Some(reason) => Err(hold.lost_error(reason)),
            None => result,
        }
    }
}

/// A release, of the server entry and then of the local turn.
type Release = Pin<Box<dyn Future<Output = Result<(), LockError>> + Send>>;

/// A release run on the task that awaits it (no task to spawn and join); if that task stops
/// awaiting it, the rest runs in a task of the hold's runtime, so a release once begun always
/// completes.
struct ReleaseInFlight {
    release: Option<Release>,
    runtime: Handle,
}

impl Future for ReleaseInFlight {
    type Output = Result<(), LockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(release) = self.release.as_mut() else { return Poll::Ready(Ok(())) };
        let result = std::task::ready!(release.as_mut().poll(cx));
        self.release = None;
        Poll::Ready(result)
    }
}

impl Drop for ReleaseInFlight {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            drop(self.runtime.spawn(release));
        }
    }
}

impl Hold {
    fn lost_error(&self, reason: LossReason) -> LockError {
        LockError::Lost { name: self.name.to_string(), token: self.token, reason }
    }

    /// The release, once (`None` after the first call), and the runtime the lock was acquired
    /// on, where it runs if nobody awaits it.
    fn take_release(&self) -> Option<(Release, Handle)> {
        let pending = self.release.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        let PendingRelease { server, local_turn, runtime } = pending;
        let (name, token, held_for) = (self.name.clone(), self.token, self.acquired_at.elapsed());
        // A closed client's session is over on the server, and its entries with it.
        let closed = self.loss.reason() == Some(LossReason::ClientClosed);
        let labels = self.labels.clone();
        labels.hold_ended(held_for);
        let release = Box::pin(async move {
            // Timed only where metrics record it.
            let started = labels.is_recording().then(Instant::now);
            let result = if closed { Ok(()) } else { serving("release", server.release()).await };
            if let Some(started) = started.filter(|_| !closed) {
                labels.released(started.elapsed(), result.is_ok());
            }
            // Only now may the next task of this client queue on the server (its key would
            // otherwise be the one being deleted).
            drop(local_turn);
            match &result {
                Ok(()) => {
                    tracing::info!(lock = %name, token = token.get(), held_ms = held_for.as_millis() as u64, "lock released")
                }
                Err(error) => tracing::warn!(lock = %name, token = token.get(), %error, "lock release not confirmed"),
            }
            result
        });
        Some((release, runtime))
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // The last guard went without `release`: release in the background.
        if let Some((release, runtime)) = self.take_release() {
            drop(runtime.spawn(release));
        }
    }
}
