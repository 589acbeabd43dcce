//! `LockClient`: turns any [`LockBackend`] into a [`DistributedLock`]. Holds what every backend
//! shares: name validation, the local FIFO queue per name (semantic 9), guards with background
//! release, timeouts, and the acquire span.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::local_queue::LocalQueues;
use crate::{DistributedLock, LockBackend, LockError, LockGuard, LockInfo, LockName, SessionState};

/// A [`DistributedLock`] on top of a backend. Backends' builders return one of these.
///
/// Tasks of one client that want the same name queue here in FIFO order, and only the first
/// takes a place in the server's queue: N waiting tasks cost the server one waiter.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use distlock_core::{DistributedLock, LockClient, mem::{MemBackend, MemServer}};
///
/// let server = MemServer::new();
/// let locks = LockClient::new(MemBackend::builder().server(server).build()?);
/// let guard = locks.lock("a").await?;
/// # drop(guard);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LockClient<B> {
    backend: Arc<B>,
    local: Arc<LocalQueues>,
}

impl<B: LockBackend> LockClient<B> {
    /// Wraps a backend.
    ///
    /// ```
    /// # fn main() -> Result<(), distlock_core::LockError> {
    /// # let _rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let _g = _rt.enter();
    /// let client = distlock_core::LockClient::new(distlock_core::mem::MemBackend::builder().build()?);
    /// # drop(client); Ok(()) }
    /// ```
    pub fn new(backend: B) -> Self {
        LockClient { backend: Arc::new(backend), local: Arc::default() }
    }

    /// The backend, for backend-specific operations (fault helpers, raw clients).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
    /// let locks = distlock_core::mem::MemLocks::connect_default()?;
    /// let session = locks.backend().session_id();
    /// # let _ = session; Ok(()) }
    /// ```
    pub fn backend(&self) -> &B {
        &self.backend
    }
}

fn current_runtime() -> Result<Handle, LockError> {
    Handle::try_current().map_err(|e| LockError::Backend {
        backend: "tokio",
        op: "lock (needs a tokio runtime to release in the background)".into(),
        retryable: false,
        source: Box::new(e),
    })
}

#[async_trait]
impl<B: LockBackend> DistributedLock for LockClient<B> {
    async fn lock(&self, name: &str) -> Result<LockGuard, LockError> {
        let name = LockName::new(name)?;
        let runtime = current_runtime()?;
        let span = tracing::info_span!("distlock.lock", lock = %name, token = tracing::field::Empty);
        async {
            let started = Instant::now();
            tracing::debug!("queued locally");
            let turn = self.local.join(&name).turn().await;
            tracing::debug!("first in local queue: queuing on the server");
            let hold = self.backend.acquire(&name).await?;
            tracing::Span::current().record("token", hold.token.get());
            tracing::info!(lock = %name, token = hold.token.get(), waited_ms = started.elapsed().as_millis() as u64, "lock acquired");
            Ok(LockGuard::new(name.clone(), hold, turn, runtime))
        }
        .instrument(span)
        .await
    }

    async fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, LockError> {
        let name = LockName::new(name)?;
        let runtime = current_runtime()?;
        let span = tracing::info_span!("distlock.try_lock", lock = %name, token = tracing::field::Empty);
        async {
            let Some(turn) = self.local.join(&name).try_turn() else {
                tracing::debug!("busy: another task of this client holds or waits for it");
                return Ok(None);
            };
            match self.backend.try_acquire(&name).await? {
                Some(hold) => {
                    tracing::Span::current().record("token", hold.token.get());
                    tracing::info!(lock = %name, token = hold.token.get(), "lock acquired");
                    Ok(Some(LockGuard::new(name.clone(), hold, turn, runtime)))
                }
                None => {
                    tracing::debug!("busy: held or queued by another client");
                    Ok(None)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn lock_timeout(&self, name: &str, timeout: Duration) -> Result<Option<LockGuard>, LockError> {
        // Validate first, so a bad name is an error and not a timeout.
        LockName::new(name)?;
        match tokio::time::timeout(timeout, self.lock(name)).await {
            Ok(result) => result.map(Some),
            Err(_) => {
                tracing::debug!(lock = name, timeout_ms = timeout.as_millis() as u64, "lock not granted in time");
                Ok(None)
            }
        }
    }

    async fn inspect(&self, name: &str) -> Result<LockInfo, LockError> {
        let name = LockName::new(name)?;
        self.backend.inspect(&name).await
    }

    fn session_state(&self) -> SessionState {
        self.backend.session_state()
    }
}
