//! `SessionSlot`: a backend's current session, replaced by a new one once it has ended. An
//! expired session is never reused; only one replacement is opened however many tasks ask.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::{backend::SessionLife, LockError};

/// A session a [`SessionSlot`] can hold.
pub trait HasLife {
    /// The session's life.
    fn life(&self) -> &SessionLife;
}

/// The current session of a backend.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use distlock_core::{backend::{HasLife, SessionLife, SessionSlot}};
///
/// struct Session(SessionLife);
/// impl HasLife for Session {
///     fn life(&self) -> &SessionLife { &self.0 }
/// }
/// let open = || async { Ok(Arc::new(Session(SessionLife::new("example", Duration::from_secs(10))))) };
/// let slot = SessionSlot::new(open().await?);
/// let first = slot.current();
/// first.life().expire();
/// let second = slot.live(open).await?; // a new session: the expired one is never reused
/// assert!(!Arc::ptr_eq(&first, &second));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SessionSlot<S> {
    current: Mutex<Arc<S>>,
    renewing: tokio::sync::Mutex<()>,
    closed: AtomicBool,
}

impl<S: HasLife> SessionSlot<S> {
    /// A slot holding `session`.
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use distlock_core::{backend::{HasLife, SessionLife, SessionSlot}};
    /// # struct S(SessionLife);
    /// # impl HasLife for S { fn life(&self) -> &SessionLife { &self.0 } }
    /// let slot = SessionSlot::new(Arc::new(S(SessionLife::new("example", Duration::from_secs(1)))));
    /// # drop(slot);
    /// ```
    pub fn new(session: Arc<S>) -> Self {
        SessionSlot {
            current: Mutex::new(session),
            renewing: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
        }
    }

    /// The current session, ended or not (for reads and state).
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use distlock_core::{backend::{HasLife, SessionLife, SessionSlot}};
    /// # struct S(SessionLife);
    /// # impl HasLife for S { fn life(&self) -> &SessionLife { &self.0 } }
    /// let slot = SessionSlot::new(Arc::new(S(SessionLife::new("example", Duration::from_secs(1)))));
    /// assert!(!slot.current().life().is_ended());
    /// ```
    pub fn current(&self) -> Arc<S> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes the slot: its session's life ends as closed ([`SessionLife::close`]) and no new
    /// session is ever opened ([`SessionSlot::live`] fails with [`LockError::Closed`]). Returns
    /// the session, for the backend to end it on the server; `None` if already closed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # use std::{sync::Arc, time::Duration};
    /// # use distlock_core::{LockError, backend::{HasLife, SessionLife, SessionSlot}};
    /// # struct S(SessionLife);
    /// # impl HasLife for S { fn life(&self) -> &SessionLife { &self.0 } }
    /// let open = || async { Ok(Arc::new(S(SessionLife::new("example", Duration::from_secs(1))))) };
    /// let slot = SessionSlot::new(open().await.unwrap());
    /// assert!(slot.close().is_some());
    /// assert!(slot.close().is_none());
    /// assert!(matches!(slot.live(open).await, Err(LockError::Closed)));
    /// # }
    /// ```
    pub fn close(&self) -> Option<Arc<S>> {
        let session = {
            let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if self.closed.swap(true, Ordering::SeqCst) {
                return None;
            }
            current.clone()
        };
        session.life().close();
        Some(session)
    }

    /// The current session if it lives; else opens a new one with `open` and keeps it. Fails
    /// with [`LockError::Closed`] once the slot is closed.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled open leaves the old session in place for the next call.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use std::{sync::Arc, time::Duration};
    /// # use distlock_core::{backend::{HasLife, SessionLife, SessionSlot}};
    /// # struct S(SessionLife);
    /// # impl HasLife for S { fn life(&self) -> &SessionLife { &self.0 } }
    /// let open = || async { Ok(Arc::new(S(SessionLife::new("example", Duration::from_secs(1))))) };
    /// let slot = SessionSlot::new(open().await?);
    /// let session = slot.live(open).await?;
    /// # drop(session); Ok(()) }
    /// ```
    pub async fn live<F, Fut>(&self, open: F) -> Result<Arc<S>, LockError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<S>, LockError>>,
    {
        let current = self.current();
        if !current.life().is_ended() {
            return Ok(current);
        }
        let _renewing = self.renewing.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(LockError::Closed);
        }
        let current = self.current();
        if !current.life().is_ended() {
            return Ok(current); // another task replaced it meanwhile
        }
        let fresh = open().await?;
        {
            // The flag is read and set under this lock, so a close either sees the new session
            // or the new session sees the close.
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if self.closed.load(Ordering::SeqCst) {
                drop(current);
                fresh.life().close(); // closed while it opened: it ends unused
                return Err(LockError::Closed);
            }
            *current = fresh.clone();
        }
        tracing::info!("new session after the previous one ended");
        Ok(fresh)
    }

    /// Runs `queue` on the live session ([`SessionSlot::live`]); if that session turns out to
    /// have ended meanwhile ([`LockError::SessionExpired`]), once more on a new one. Made for
    /// queuing: whatever `queue` made on the ended session ended with it, so the caller, who
    /// holds nothing of that session yet, need not see its end.
    ///
    /// # Cancel safety
    /// Cancel safe if `open` and `queue` are.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// # use std::{sync::Arc, time::Duration};
    /// # use distlock_core::{LockError, backend::{HasLife, SessionLife, SessionSlot}};
    /// # struct S(SessionLife);
    /// # impl HasLife for S { fn life(&self) -> &SessionLife { &self.0 } }
    /// let open = || async { Ok(Arc::new(S(SessionLife::new("example", Duration::from_secs(1))))) };
    /// let slot = SessionSlot::new(open().await?);
    /// let first = slot.current();
    /// let queued = slot
    ///     .on_live(open, |session| {
    ///         let first_try = Arc::ptr_eq(&session, &first);
    ///         async move {
    ///             if first_try {
    ///                 session.life().expire(); // the first session ends while it queues
    ///                 return Err(LockError::SessionExpired { during: "queuing".into() });
    ///             }
    ///             Ok("queued on a new session")
    ///         }
    ///     })
    ///     .await;
    /// assert_eq!(queued?, "queued on a new session");
    /// # Ok(()) }
    /// ```
    pub async fn on_live<T, O, OFut, Q, QFut>(&self, open: O, mut queue: Q) -> Result<T, LockError>
    where
        O: Fn() -> OFut,
        OFut: Future<Output = Result<Arc<S>, LockError>>,
        Q: FnMut(Arc<S>) -> QFut,
        QFut: Future<Output = Result<T, LockError>>,
    {
        match queue(self.live(&open).await?).await {
            Err(LockError::SessionExpired { during }) => {
                tracing::debug!(%during, "the session ended before anything was queued: queuing on a new one");
                queue(self.live(&open).await?).await
            }
            other => other,
        }
    }
}
