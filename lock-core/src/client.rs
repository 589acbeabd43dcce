//! `LockClient`: turns any [`LockBackend`] into a [`DistributedLock`]. Holds what every backend
//! shares: name validation, the local FIFO queue per name, guards with background release,
//! timeouts, wait progress, closing, and the acquire span.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::{EntryRequest, LockBackend, Recipe, ServerHold, ServerProclaim};
use crate::local_queue::{LocalKey, LocalQueues, LocalTurn};
use crate::metrics::{serving, HoldLabels, MetricNames, WaitRecord};
use crate::{
    DistributedLock, Leader, LeaderObserver, Leadership, LockError, LockGuard, LockInfo, LockName, QueueEntry,
    SessionState, WaitProgress,
};

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
    /// Cancelled by `close`: new calls fail and waits end.
    closed: CancellationToken,
    /// The lock names whose metrics carry a `name` label.
    metric_names: MetricNames,
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
        crate::metrics::describe();
        LockClient {
            backend: Arc::new(backend),
            local: Arc::default(),
            closed: CancellationToken::new(),
            metric_names: MetricNames::default(),
        }
    }

    /// Labels the metrics of the locks `names` lists with their name ([`MetricNames`]); by
    /// default no metric carries a name.
    ///
    /// ```
    /// # fn main() -> Result<(), distlock_core::LockError> {
    /// # let _rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let _g = _rt.enter();
    /// use distlock_core::{LockClient, mem::MemBackend, metrics::MetricNames};
    /// let client = LockClient::new(MemBackend::builder().build()?).with_metric_names(MetricNames::parse("jobs/")?);
    /// # drop(client); Ok(()) }
    /// ```
    pub fn with_metric_names(mut self, names: MetricNames) -> Self {
        self.metric_names = names;
        self
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

impl<B: LockBackend> LockClient<B> {
    fn check_open(&self) -> Result<(), LockError> {
        if self.closed.is_cancelled() {
            return Err(LockError::Closed);
        }
        Ok(())
    }

    /// Refuses a read-write lock's side while this client holds the other side of the same
    /// name: the request would queue behind its own hold (locally, and on the server) forever.
    fn check_not_waiting_for_itself(&self, name: &LockName, entry: &EntryRequest) -> Result<(), LockError> {
        let held = self.local.held(&LocalKey::new(name, entry.recipe));
        match (held, entry.recipe) {
            (Some(held @ Recipe::Read), Recipe::Write) | (Some(held @ Recipe::Write), Recipe::Read) => {
                Err(LockError::WouldWaitForItself {
                    name: name.to_string(),
                    held: held.noun(),
                    asked: entry.recipe.noun(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The labels of the metrics of an acquisition of `name` as `entry` asks.
    fn labels(&self, name: &LockName, entry: &EntryRequest) -> HoldLabels {
        HoldLabels::new(self.backend.backend_name(), entry.recipe, name, &self.metric_names)
    }

    /// The one acquire path of every recipe: local queue, server queue, grant. `progress` gets
    /// the wait's steps when given, at one queue read per `every`.
    async fn acquire(
        &self,
        name: LockName,
        entry: &EntryRequest,
        progress: Option<(Duration, &(dyn Fn(WaitProgress) + Send + Sync))>,
    ) -> Result<Granted, LockError> {
        let mut wait = self.labels(&name, entry).wait_started();
        self.acquire_recorded(name, entry, progress, &mut wait).await
    }

    /// [`LockClient::acquire`], ending `wait` as the acquisition ends (granted or failed;
    /// dropped, the record counts it cancelled).
    async fn acquire_recorded(
        &self,
        name: LockName,
        entry: &EntryRequest,
        progress: Option<(Duration, &(dyn Fn(WaitProgress) + Send + Sync))>,
        wait: &mut WaitRecord,
    ) -> Result<Granted, LockError> {
        let result = self.acquire_unrecorded(name, entry, progress, wait.labels().clone()).await;
        match &result {
            Ok(_) => wait.granted(),
            Err(_) => wait.failed(),
        }
        result
    }

    /// The acquisition itself; its hold's metrics go under `labels`.
    async fn acquire_unrecorded(
        &self,
        name: LockName,
        entry: &EntryRequest,
        progress: Option<(Duration, &(dyn Fn(WaitProgress) + Send + Sync))>,
        labels: HoldLabels,
    ) -> Result<Granted, LockError> {
        self.check_open()?;
        self.check_not_waiting_for_itself(&name, entry)?;
        let runtime = current_runtime()?;
        let recipe = entry.recipe.noun();
        let span = tracing::info_span!("distlock.acquire", recipe, lock = %name, token = tracing::field::Empty);
        let acquire = async {
            let started = Instant::now();
            tracing::debug!("queued locally");
            let mut turn = self.local.join(&LocalKey::new(&name, entry.recipe)).turn().await;
            tracing::debug!("first in local queue: queuing on the server");
            // Progress: the entry goes to the caller and to the queue reads; without it, nothing
            // is made for it.
            let progress = progress.map(|(every, report)| (every, report, tokio::sync::watch::channel(None)));
            let report_entry = |entry: QueueEntry| {
                tracing::debug!(owner = %entry.owner, token = entry.token.get(), "queued on the server");
                if let Some((_, report, (entry_tx, _))) = &progress {
                    report(WaitProgress::Queued { entry: entry.clone() });
                    entry_tx.send_replace(Some(entry));
                }
            };
            let server = serving("acquire", self.backend.acquire(&name, entry, &report_entry));
            let hold = match &progress {
                None => server.await?,
                Some((every, report, (_, entry_rx))) => {
                    tokio::select! {
                        hold = server => hold?,
                        never = self.report_waiting(&name, entry_rx.clone(), *every, *report) => match never {},
                    }
                }
            };
            tracing::Span::current().record("token", hold.token.get());
            tracing::info!(recipe, lock = %name, token = hold.token.get(), waited_ms = started.elapsed().as_millis() as u64, "acquired");
            turn.holds(entry.recipe);
            Ok(Granted::new(name.clone(), hold, turn, runtime, labels))
        }
        .instrument(span);
        let result = acquire.await;
        // `close` ends waits by ending the session (a wait behind another task of this client
        // then fails to open a new one): whatever the wait saw, a closed client says Closed. A
        // grant that raced the close is dropped; its hold was lost with the session.
        if self.closed.is_cancelled() {
            return Err(LockError::Closed);
        }
        result
    }

    /// [`LockClient::acquire`] without waiting: `None` if the entry is not granted at once.
    async fn try_acquire(&self, name: LockName, entry: &EntryRequest) -> Result<Option<Granted>, LockError> {
        let labels = self.labels(&name, entry);
        let mut wait = labels.wait_started();
        let result = self.try_acquire_unrecorded(name, entry, labels).await;
        match &result {
            Ok(Some(_)) => wait.granted(),
            Ok(None) => wait.missed(),
            Err(_) => wait.failed(),
        }
        result
    }

    /// [`LockClient::try_acquire`] itself; its hold's metrics go under `labels`.
    async fn try_acquire_unrecorded(
        &self,
        name: LockName,
        entry: &EntryRequest,
        labels: HoldLabels,
    ) -> Result<Option<Granted>, LockError> {
        self.check_open()?;
        self.check_not_waiting_for_itself(&name, entry)?;
        let runtime = current_runtime()?;
        let recipe = entry.recipe.noun();
        let span = tracing::info_span!("distlock.try_acquire", recipe, lock = %name, token = tracing::field::Empty);
        async {
            let Some(mut turn) = self.local.join(&LocalKey::new(&name, entry.recipe)).try_turn() else {
                tracing::debug!("busy: another task of this client holds or waits for it");
                return Ok(None);
            };
            match serving("acquire", self.backend.try_acquire(&name, entry)).await? {
                Some(hold) => {
                    tracing::Span::current().record("token", hold.token.get());
                    tracing::info!(recipe, lock = %name, token = hold.token.get(), "acquired");
                    turn.holds(entry.recipe);
                    Ok(Some(Granted::new(name.clone(), hold, turn, runtime, labels)))
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

    /// [`LockClient::acquire`] for at most `timeout`: `None` if not granted in time, once the
    /// wait's entry is gone.
    async fn acquire_timeout(
        &self,
        name: LockName,
        entry: &EntryRequest,
        timeout: Duration,
    ) -> Result<Option<Granted>, LockError> {
        let mut wait = self.labels(&name, entry).wait_started();
        match tokio::time::timeout(timeout, self.acquire_recorded(name.clone(), entry, None, &mut wait)).await {
            Ok(result) => result.map(Some),
            Err(_) => {
                wait.timed_out();
                // The dropped wait's entry is being removed in the background: wait for it.
                self.backend.settle(&name).await;
                tracing::debug!(lock = %name, timeout_ms = timeout.as_millis() as u64, "not granted in time; the wait's entry is gone");
                Ok(None)
            }
        }
    }

    /// Once our entry is queued, reads the queue and reports where it stands, every `every`,
    /// for as long as the wait lasts (the caller drops it when the wait ends).
    async fn report_waiting(
        &self,
        name: &LockName,
        mut entry: tokio::sync::watch::Receiver<Option<QueueEntry>>,
        every: Duration,
        report: &(dyn Fn(WaitProgress) + Send + Sync),
    ) -> std::convert::Infallible {
        let owner = match entry.wait_for(Option::is_some).await {
            Ok(entry) => entry.as_ref().map(|e| e.owner.clone()),
            Err(_) => None,
        };
        let Some(owner) = owner else { return std::future::pending().await };
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
        loop {
            ticks.tick().await;
            match serving("inspect", self.backend.inspect(name)).await {
                Ok(queue) => {
                    if let Some(ahead) = queue.ahead_of(&owner) {
                        report(WaitProgress::Waiting { queue, ahead });
                    }
                }
                Err(error) => tracing::debug!(lock = %name, %error, "could not read the queue for progress"),
            }
        }
    }
}

/// A granted entry: its guard and, for an election's entry, the way to change its value.
struct Granted {
    guard: LockGuard,
    proclaim: Option<std::sync::Arc<dyn ServerProclaim>>,
}

impl Granted {
    /// A hold the server granted, as the client hands it out: its guard, its way to proclaim
    /// kept beside it.
    fn new(name: LockName, mut hold: ServerHold, turn: LocalTurn, runtime: Handle, labels: HoldLabels) -> Self {
        let proclaim = hold.proclaim.take();
        Granted { guard: LockGuard::new(name, hold, turn, runtime, labels), proclaim }
    }

    /// The leadership of a granted candidate that campaigned with `value`.
    fn leadership(self, value: &str) -> Result<Leadership, LockError> {
        let Some(proclaim) = self.proclaim else {
            return Err(LockError::Backend {
                backend: "distlock",
                op: format!("campaign for {:?}", self.guard.name().as_str()),
                retryable: false,
                source: "the backend granted a candidate's entry without a way to proclaim: a backend bug".into(),
            });
        };
        tracing::info!(election = %self.guard.name(), term = self.guard.fencing_token().get(), value, "elected leader");
        Ok(Leadership::new(self.guard, value.to_owned(), proclaim))
    }
}

/// The entry of a permit of a semaphore of `permits` permits: at least one.
fn permit_request(permits: u32) -> Result<EntryRequest, LockError> {
    let permits = std::num::NonZeroU32::new(permits)
        .ok_or_else(|| LockError::invalid_config("permits", "a semaphore needs at least 1 permit, got 0"))?;
    Ok(EntryRequest::permit(permits))
}

/// A prefix of lock names as `inspect_all` takes it: the lock directory it names (`None`: all)
/// and whether only the locks strictly below it count (a trailing `/`).
fn parse_prefix(prefix: &str) -> Result<(Option<LockName>, bool), LockError> {
    if prefix.is_empty() {
        return Ok((None, false));
    }
    let below_only = prefix.ends_with('/');
    let dir = LockName::new(prefix.strip_suffix('/').unwrap_or(prefix)).map_err(|e| match e {
        LockError::InvalidName { reason, .. } => LockError::InvalidName { name: prefix.to_owned(), reason },
        other => other,
    })?;
    Ok((Some(dir), below_only))
}

#[async_trait]
impl<B: LockBackend> DistributedLock for LockClient<B> {
    async fn lock(&self, name: &str) -> Result<LockGuard, LockError> {
        Ok(self.acquire(LockName::new(name)?, &EntryRequest::lock(), None).await?.guard)
    }

    async fn lock_with_progress(
        &self,
        name: &str,
        every: Duration,
        progress: &(dyn Fn(WaitProgress) + Send + Sync),
    ) -> Result<LockGuard, LockError> {
        Ok(self.acquire(LockName::new(name)?, &EntryRequest::lock(), Some((every, progress))).await?.guard)
    }

    async fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, LockError> {
        Ok(self.try_acquire(LockName::new(name)?, &EntryRequest::lock()).await?.map(|g| g.guard))
    }

    async fn lock_timeout(&self, name: &str, timeout: Duration) -> Result<Option<LockGuard>, LockError> {
        // Validate first, so a bad name is an error and not a timeout.
        let name = LockName::new(name)?;
        Ok(self.acquire_timeout(name, &EntryRequest::lock(), timeout).await?.map(|g| g.guard))
    }

    async fn acquire_permit(&self, name: &str, permits: u32) -> Result<LockGuard, LockError> {
        let name = LockName::new(name)?;
        Ok(self.acquire(name, &permit_request(permits)?, None).await?.guard)
    }

    async fn try_acquire_permit(&self, name: &str, permits: u32) -> Result<Option<LockGuard>, LockError> {
        let name = LockName::new(name)?;
        Ok(self.try_acquire(name, &permit_request(permits)?).await?.map(|g| g.guard))
    }

    async fn read_lock(&self, name: &str) -> Result<LockGuard, LockError> {
        Ok(self.acquire(LockName::new(name)?, &EntryRequest::read_write(true), None).await?.guard)
    }

    async fn try_read_lock(&self, name: &str) -> Result<Option<LockGuard>, LockError> {
        Ok(self.try_acquire(LockName::new(name)?, &EntryRequest::read_write(true)).await?.map(|g| g.guard))
    }

    async fn write_lock(&self, name: &str) -> Result<LockGuard, LockError> {
        Ok(self.acquire(LockName::new(name)?, &EntryRequest::read_write(false), None).await?.guard)
    }

    async fn try_write_lock(&self, name: &str) -> Result<Option<LockGuard>, LockError> {
        Ok(self.try_acquire(LockName::new(name)?, &EntryRequest::read_write(false)).await?.map(|g| g.guard))
    }

    async fn campaign(&self, name: &str, value: &str) -> Result<Leadership, LockError> {
        self.acquire(LockName::new(name)?, &EntryRequest::candidate(value), None).await?.leadership(value)
    }

    async fn try_campaign(&self, name: &str, value: &str) -> Result<Option<Leadership>, LockError> {
        let granted = self.try_acquire(LockName::new(name)?, &EntryRequest::candidate(value)).await?;
        granted.map(|g| g.leadership(value)).transpose()
    }

    async fn campaign_timeout(
        &self,
        name: &str,
        value: &str,
        timeout: Duration,
    ) -> Result<Option<Leadership>, LockError> {
        let name = LockName::new(name)?;
        let granted = self.acquire_timeout(name, &EntryRequest::candidate(value), timeout).await?;
        granted.map(|g| g.leadership(value)).transpose()
    }

    async fn leader(&self, name: &str) -> Result<Option<Leader>, LockError> {
        let name = LockName::new(name)?;
        self.check_open()?;
        serving("observe", self.backend.leader(&name)).await
    }

    async fn observe(&self, name: &str) -> Result<LeaderObserver, LockError> {
        let name = LockName::new(name)?;
        self.check_open()?;
        let feed = serving("observe", self.backend.observe(&name)).await?;
        Ok(LeaderObserver::new(name, feed, self.closed.clone()))
    }

    async fn inspect(&self, name: &str) -> Result<LockInfo, LockError> {
        let name = LockName::new(name)?;
        self.check_open()?;
        serving("inspect", self.backend.inspect(&name)).await
    }

    async fn inspect_all(&self, prefix: &str) -> Result<Vec<LockInfo>, LockError> {
        let (dir, below_only) = parse_prefix(prefix)?;
        self.check_open()?;
        let mut locks = serving("inspect", self.backend.inspect_all(dir.as_ref())).await?;
        locks.retain(|info| match &dir {
            None => !info.is_free(),
            Some(dir) => {
                let below = info.name.as_str().strip_prefix(dir.as_str()).is_some_and(|rest| rest.starts_with('/'));
                !info.is_free() && (below || (!below_only && info.name == *dir))
            }
        });
        locks.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(locks)
    }

    fn session_state(&self) -> SessionState {
        if self.closed.is_cancelled() {
            return SessionState::Closed;
        }
        self.backend.session_state()
    }

    async fn close(&self) -> Result<(), LockError> {
        if self.closed.is_cancelled() {
            return Ok(());
        }
        self.closed.cancel();
        tracing::info!("closing the lock client: ending its session on the server");
        serving("close", self.backend.close()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_name_a_lock_directory() {
        let dir = |s: &str| Some(LockName::new(s).unwrap());
        for (prefix, expected) in [("", (None, false)), ("jobs", (dir("jobs"), false)), ("jobs/", (dir("jobs"), true))]
        {
            assert_eq!(parse_prefix(prefix).unwrap(), expected, "{prefix:?}");
        }
        for bad in ["/", "jobs//", "../x", "a\0b"] {
            assert!(matches!(parse_prefix(bad), Err(LockError::InvalidName { .. })), "{bad:?}");
        }
    }
}
