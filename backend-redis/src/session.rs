//! One Redis session: a key with the session's TTL (`<prefix>:s:<id>`), renewed by one keepalive
//! every TTL/3 for the whole client however many locks it holds, the lease clock that says when
//! the server could have expired it, the session's wake channel, and the requests of its
//! queues with their retries.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock_core::backend::{retry_request, PendingCleanups, RetryPolicy, SessionLife};
use distlock_core::{FencingToken, LockError, LockName, LossReason};
use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::RedisConfig;
use crate::errors::{classify, is_connection_failure, request_error};
use crate::layout;
use crate::link::{Link, Subscription};
use crate::scripts::{self, Renewed};
use crate::wakes::Wakes;

/// A session: its key, its keepalive, its wake channel.
pub(crate) struct RedisSession {
    /// The session's id: a uuid, the member of its queue entries.
    pub(crate) id: String,
    pub(crate) link: Arc<Link>,
    pub(crate) config: Arc<RedisConfig>,
    pub(crate) life: Arc<SessionLife>,
    /// Removals of cancelled waits' and unconfirmed releases' entries still in flight, by
    /// queue key: the session queues there again only after.
    pub(crate) cleanups: PendingCleanups,
    /// The waiters, for the grants heard on the wake channel.
    pub(crate) wakes: Arc<Wakes>,
    requests: Arc<AtomicU64>,
    /// The scripts' first argument ([`layout::script_prefix`]).
    script_prefix: String,
    keepalive: Mutex<Option<JoinHandle<()>>>,
    _wake_channel: Subscription,
}

impl distlock_core::backend::HasLife for RedisSession {
    fn life(&self) -> &SessionLife {
        &self.life
    }
}

impl std::fmt::Debug for RedisSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSession").field("id", &self.id).field("life", &self.life).finish()
    }
}

/// Runs `attempt` (one request) with the request timeout while `life` lasts, retrying
/// connection failures on a new connection for up to three request timeouts.
pub(crate) async fn retried<T, F, Fut>(
    link: &Link,
    config: &RedisConfig,
    life: &SessionLife,
    op: &str,
    count: impl Fn(),
    attempt: F,
) -> Result<T, LockError>
where
    F: Fn(MultiplexedConnection) -> Fut,
    Fut: Future<Output = Result<T, RedisError>>,
{
    retry_request(
        life,
        RetryPolicy::new(config.request_timeout),
        classify,
        |e| request_error(op, &config.endpoint_label(), e),
        count,
        || async {
            let (id, connection) = link.connection().await?;
            let result = attempt(connection).await;
            if let Err(error) = &result {
                if is_connection_failure(error) {
                    link.reset(id);
                }
            }
            result
        },
        op,
    )
    .await
}

impl RedisSession {
    /// Opens a session: subscribes its wake channel, writes its key and index (`lua/open.lua`), and
    /// starts its keepalive. A retried write whose first reply was lost finds them made.
    pub(crate) async fn open(
        link: Arc<Link>,
        config: Arc<RedisConfig>,
        requests: Arc<AtomicU64>,
    ) -> Result<Arc<Self>, LockError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let life = Arc::new(SessionLife::new("redis", config.ttl));
        let wakes = Arc::new(Wakes::default());
        let route = {
            let wakes = wakes.clone();
            Arc::new(move |message: &[u8]| wakes.deliver(message))
        };
        let channel = layout::wake_channel(&config.prefix, &id);
        let wake_channel = link.subscribe(channel, route).await.map_err(|e| {
            request_error("connect and subscribe the session's channel", &config.endpoint_label(), Some(e))
        })?;
        let ttl_ms = config.ttl.as_millis() as u64;
        let script_prefix = layout::script_prefix(&config.prefix);
        let args = crate::args![script_prefix, id, ttl_ms.to_string()];
        // The first attempt's send time: a retried write starts the TTL later, never earlier.
        let sent = Instant::now();
        let count = || {
            requests.fetch_add(1, Ordering::Relaxed);
            distlock_core::backend::server_request("redis");
        };
        retried(&link, &config, &life, "open a session", count, |mut connection| {
            let args = args.clone();
            async move { scripts::invoke::<i64>(&scripts::OPEN, &args, &mut connection).await }
        })
        .await?;
        life.renewed(sent);
        let session = Arc::new(RedisSession {
            id,
            link,
            config,
            life,
            cleanups: PendingCleanups::default(),
            wakes,
            requests,
            script_prefix,
            keepalive: Mutex::new(None),
            _wake_channel: wake_channel,
        });
        let task = tokio::spawn(keep_alive(Arc::downgrade(&session), session.life.clone()));
        *session.keepalive.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tracing::info!(session = %session.id, ttl_ms, "redis session opened");
        Ok(session)
    }

    /// Counts one request to the server.
    pub(crate) fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        distlock_core::backend::server_request("redis");
    }

    /// Runs `attempt` (one request) through [`retried`] on this session's life. Callers make
    /// their requests idempotent: a request that timed out may have been applied.
    pub(crate) async fn request<T, F, Fut>(&self, op: &str, attempt: F) -> Result<T, LockError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        retried(&self.link, &self.config, &self.life, op, || self.count(), attempt).await
    }

    /// Runs `script` with `args` (after the key prefix) through [`RedisSession::request`].
    pub(crate) async fn script<T: redis::FromRedisValue>(
        &self,
        op: &str,
        script: &'static redis::Script,
        args: Vec<Vec<u8>>,
    ) -> Result<T, LockError> {
        let call = &scripts::call(
            script,
            std::iter::once(self.script_prefix.as_bytes()).chain(args.iter().map(Vec::as_slice)),
        );
        self.request(op, |mut connection| async move { scripts::run(script, call, &mut connection).await }).await
    }

    /// With `replicas=N`: waits until N replicas have everything the primary applied before
    /// now (Redis `WAIT`, after a write of this connection's own: an empty message on the
    /// session's replication mark channel), so a grant or release made by any client's script
    /// before this call survives a failover to one of them. An error if fewer acknowledge
    /// within half the request timeout. Nothing (no request) without `replicas`.
    pub(crate) async fn replicated(&self, op: &str) -> Result<(), LockError> {
        let wanted = self.config.replicas;
        if wanted == 0 {
            return Ok(());
        }
        let wait = self.config.request_timeout / 2;
        let channel = layout::replication_mark_channel(&self.config.prefix, &self.id);
        let channel = &channel;
        let acknowledged: i64 = self
            .request(op, |mut connection| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("PUBLISH").arg(channel).arg("").ignore();
                pipe.cmd("WAIT").arg(wanted).arg(wait.as_millis() as u64);
                let (acknowledged,): (i64,) = pipe.query_async(&mut connection).await?;
                Ok(acknowledged)
            })
            .await?;
        if acknowledged < i64::from(wanted) {
            return Err(not_replicated(op, acknowledged, wanted, wait));
        }
        Ok(())
    }

    /// The keepalive found the entry of `queue` with `token` gone from its queue: if it was a
    /// hold's (tokens are unique per name), the hold is lost.
    fn entry_deleted(&self, queue: &str, token: u64) {
        let Some(name) = layout::name_of(&self.config.prefix, queue).and_then(|n| LockName::new(n).ok()) else {
            return;
        };
        if self.life.holds().fire(&name, FencingToken::new(token), LossReason::EntryDeleted) {
            tracing::warn!(queue, token, "lock entry deleted by someone else: lost");
        }
    }

    /// Ends the session on the server (its life already ended as closed): deletes its key and
    /// removes every entry it has, admitting whoever is next, in one script.
    pub(crate) async fn end_on_server(&self) -> Result<(), LockError> {
        // The session's own life has ended, and requests stop with it; the close outlives it.
        let closing = SessionLife::new("redis", self.config.ttl);
        let args = crate::args![self.script_prefix, self.id];
        retried(
            &self.link,
            &self.config,
            &closing,
            "close the session",
            || self.count(),
            |mut connection| {
                let args = args.clone();
                async move { scripts::invoke::<i64>(&scripts::CLOSE, &args, &mut connection).await }
            },
        )
        .await?;
        tracing::info!(session = %self.id, "redis session closed");
        Ok(())
    }
}

impl Drop for RedisSession {
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        if self.life.is_ended() {
            return;
        }
        // Like etcd's Go session.Close(): end the session, so nothing of ours waits for the TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (link, timeout) = (self.link.clone(), self.config.request_timeout);
            let args = crate::args![self.script_prefix, self.id];
            runtime.spawn(async move {
                let close = async {
                    let (_, mut connection) = link.connection().await?;
                    scripts::invoke::<i64>(&scripts::CLOSE, &args, &mut connection).await
                };
                let _ = tokio::time::timeout(timeout, close).await;
            });
        }
    }
}

/// The error of a change fewer replicas acknowledged than `replicas=N` asks.
fn not_replicated(op: &str, acknowledged: i64, wanted: u32, wait: Duration) -> LockError {
    LockError::Backend {
        backend: "redis",
        op: op.to_owned(),
        retryable: true,
        source: format!(
            "{acknowledged} of the {wanted} replicas asked for (replicas={wanted}) acknowledged it within {wait:?}: \
             a failover could lose it; check the replicas' links (INFO replication), or lower replicas="
        )
        .into(),
    }
}

/// Renewals that may fail in a row before the session counts as suspended.
const QUICK_RETRIES: u32 = 2;

/// Keeps the session alive while it lives: one keepalive script every TTL/3 (retried sooner
/// after a failure); reports renewals, expiry and silence through [`SessionLife`], and the
/// holds whose entries someone else deleted.
async fn keep_alive(session: std::sync::Weak<RedisSession>, life: Arc<SessionLife>) {
    let interval = life.clock().ttl() / 3;
    let renew = async {
        let mut failures = 0u32;
        let mut pause = interval;
        loop {
            tokio::time::sleep(pause).await;
            let Some(session) = session.upgrade() else { return };
            let ttl_ms = session.config.ttl.as_millis().to_string();
            let args = crate::args![session.script_prefix, session.id, ttl_ms];
            let sent = Instant::now();
            let renewal = async {
                let (connection_id, mut connection) = session.link.connection().await?;
                let renewed = scripts::invoke::<Renewed>(&scripts::KEEPALIVE, &args, &mut connection).await;
                if renewed.as_ref().is_err_and(is_connection_failure) {
                    session.link.reset(connection_id);
                }
                // With replicas=N a renewal counts once N replicas have it (the script wrote on
                // this connection, so WAIT covers it): a failover must not find an older expiry.
                let wanted = session.config.replicas;
                if !matches!(renewed, Ok(Renewed::Alive(_))) || wanted == 0 {
                    return renewed.map(|renewed| (renewed, true));
                }
                let wait = interval.min(session.config.request_timeout) / 2;
                let acknowledged: i64 =
                    redis::cmd("WAIT").arg(wanted).arg(wait.as_millis() as u64).query_async(&mut connection).await?;
                if acknowledged < i64::from(wanted) {
                    tracing::warn!(session = %session.id, acknowledged, wanted, "a renewal the replicas did not acknowledge does not count");
                }
                renewed.map(|renewed| (renewed, acknowledged >= i64::from(wanted)))
            };
            let renewed = match tokio::time::timeout(session.config.request_timeout.min(interval), renewal).await {
                Ok(Ok((Renewed::Alive(missing), replicated))) => {
                    for (queue, token) in missing {
                        session.entry_deleted(&queue, token);
                    }
                    replicated
                }
                Ok(Ok((Renewed::Expired, _))) => {
                    tracing::warn!(session = %session.id, "redis session expired");
                    life.expire();
                    return;
                }
                Ok(Err(_)) | Err(_) => {
                    session.link.reset_current();
                    false
                }
            };
            if renewed {
                life.renewed(sent);
                failures = 0;
                pause = interval;
            } else {
                failures += 1;
                if failures > QUICK_RETRIES {
                    life.suspended();
                }
                pause = Duration::from_millis(100).min(interval);
            }
        }
    };
    tokio::select! {
        _ = life.watch_silence() => {}
        _ = life.ended() => {}
        _ = renew => {}
    }
}
