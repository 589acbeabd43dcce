//! One etcd session: a lease kept alive by one background task however many locks the client
//! holds, the lease clock that says when the server could have expired it, and the request
//! counter that benchmarks and the conformance suite read.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock_core::{
    backend::{retry_request, Attempt, PendingCleanups, RecentContention, ReleaseRecords, RetryPolicy, SessionLife},
    LockError,
};
use etcd_client::{Client, KvClient};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::EtcdConfig;
use crate::errors::{is_lease_not_found, is_transient, request_error};
use crate::key_generations::KeyGenerations;
use crate::permit_mailbox::PermitMailbox;
use crate::watch::WatchCache;
use crate::watch_hub::WatchHub;

/// A session: one lease and its keepalive.
pub(crate) struct EtcdSession {
    pub(crate) client: Client,
    /// The client's KV service alone: a request clones it, not the whole client.
    pub(crate) kv: KvClient,
    pub(crate) config: Arc<EtcdConfig>,
    pub(crate) lease: i64,
    pub(crate) life: Arc<SessionLife>,
    requests: Arc<AtomicU64>,
    /// Deletes of cancelled waiters' keys still in flight, by key: a new acquire of the same key
    /// waits for them, so it never mistakes the dying key for its own.
    pub(crate) cleanups: PendingCleanups,
    /// Deletion watches kept for the next wait on the same key.
    pub(crate) watches: WatchCache,
    /// The one watch stream all of the session's watches share.
    pub(crate) hub: WatchHub,
    /// Whether the server lets us write release markers (a role granted only the locks' own
    /// keys does not): without them, releases delete alone and wake-ups read the queue.
    pub(crate) markers: ReleaseRecords,
    /// The lock queues where the session met others lately: it reads the queue when it joins
    /// them, and elsewhere first asks only whether the queue is empty.
    pub(crate) contention: RecentContention,
    /// The queues whose keys moved to a new generation after a release went unconfirmed.
    pub(crate) key_generations: KeyGenerations,
    /// Where releasing permit holders tell the session's waiting permits they are granted.
    pub(crate) mailbox: PermitMailbox,
    keepalive: Mutex<Option<JoinHandle<()>>>,
}

impl distlock_core::backend::HasLife for EtcdSession {
    fn life(&self) -> &SessionLife {
        &self.life
    }
}

impl std::fmt::Debug for EtcdSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSession")
            .field("lease", &format_args!("{:x}", self.lease))
            .field("life", &self.life)
            .finish()
    }
}

/// Runs `attempt` (one request to etcd) as [`EtcdSession::request`] says, while `life` lasts: the
/// retries, their budget and the errors, for the session's requests and for the grant and the
/// revoke that begin and end a session.
async fn retried<T, Fut>(
    config: &EtcdConfig,
    life: &SessionLife,
    op: &str,
    count: impl Fn(),
    attempt: impl FnMut() -> Fut,
) -> Result<T, LockError>
where
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let timeout = config.request_timeout;
    retry_request(
        life,
        RetryPolicy::new(timeout),
        |e| if is_transient(e) { Attempt::Transient(()) } else { Attempt::Fatal(()) },
        |e| match e {
            // A request that names our lease (a put in the queue Txn, a keepalive) fails this
            // way once the server expired it: the session is over, whatever the op.
            Some(e) if is_lease_not_found(&e) => {
                life.expire();
                LockError::SessionExpired { during: op.to_owned() }
            }
            Some(e) => request_error(op, &config.endpoints_label(), e),
            None => LockError::Unreachable {
                endpoints: config.endpoints_label(),
                what: format!("{op} (no answer within {timeout:?})"),
                source: None,
            },
        },
        count,
        attempt,
        op,
    )
    .await
}

impl EtcdSession {
    /// Grants a lease and starts its keepalive. A grant that fails on the way (an endpoint that
    /// is down, a connection reset) is tried again within three request timeouts, as every
    /// request is: with one member of three down, the next attempt goes to another. A grant
    /// that was applied but unanswered leaves a lease with nothing on it, which expires.
    pub(crate) async fn open(
        client: Client,
        config: Arc<EtcdConfig>,
        requests: Arc<AtomicU64>,
    ) -> Result<Arc<Self>, LockError> {
        let ttl = config.ttl;
        let life = Arc::new(SessionLife::new("etcd", ttl));
        let mut sent = Instant::now();
        let grant = retried(
            &config,
            &life,
            "grant a lease",
            || {
                requests.fetch_add(1, Ordering::Relaxed);
            },
            || {
                sent = Instant::now();
                let mut leases = client.lease_client();
                async move { leases.grant(ttl.as_secs() as i64, None).await }
            },
        )
        .await?;
        life.renewed(sent);
        let session = Arc::new(EtcdSession {
            hub: WatchHub::new(client.clone()),
            kv: client.kv_client(),
            client,
            config,
            lease: grant.id(),
            life,
            requests,
            cleanups: PendingCleanups::default(),
            watches: WatchCache::default(),
            markers: ReleaseRecords::default(),
            contention: RecentContention::default(),
            key_generations: KeyGenerations::default(),
            mailbox: PermitMailbox::default(),
            keepalive: Mutex::new(None),
        });
        let task = tokio::spawn(keep_alive(
            session.life.clone(),
            session.client.lease_client(),
            session.lease,
            session.config.request_timeout,
        ));
        *session.keepalive.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tracing::info!(lease = format!("{:x}", session.lease), ttl_s = ttl.as_secs(), "etcd session opened");
        Ok(session)
    }

    /// Counts one request to the server.
    pub(crate) fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        distlock_core::backend::server_request("etcd");
    }

    /// Runs `attempt` (one request) with the request timeout, retrying transient failures (the
    /// request may have been applied: callers make their requests idempotent) for up to three
    /// request timeouts, and never after the session ended. A "lease not found" answer ends the
    /// session and is reported as [`LockError::SessionExpired`].
    /// Each attempt gets its own clone of `client` (one gRPC service client, cheap to clone).
    pub(crate) async fn request<C, T, F, Fut>(&self, op: &str, client: &C, mut attempt: F) -> Result<T, LockError>
    where
        C: Clone,
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        retried(&self.config, &self.life, op, || self.count(), || attempt(client.clone())).await
    }

    /// One Txn through [`EtcdSession::request`].
    pub(crate) async fn txn(&self, op: &str, txn: etcd_client::Txn) -> Result<etcd_client::TxnResponse, LockError> {
        self.request(op, &self.kv, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// Revokes the lease (the session's life already ended as closed): the server deletes every
    /// key on it, ours in every queue and our release markers, in one request, retried as every
    /// request is (a revoke applied twice finds the lease gone, which counts as revoked).
    pub(crate) async fn revoke(&self) -> Result<(), LockError> {
        // The session's own life has ended, and requests stop with it; the revoke outlives it.
        let revoking = SessionLife::new("etcd", self.config.ttl);
        let revoked = retried(
            &self.config,
            &revoking,
            "revoke the session's lease",
            || self.count(),
            || {
                let (mut leases, lease) = (self.client.lease_client(), self.lease);
                async move {
                    match leases.revoke(lease).await {
                        Err(e) if is_lease_not_found(&e) => Ok(()),
                        other => other.map(drop),
                    }
                }
            },
        );
        revoked.await?;
        tracing::info!(lease = format!("{:x}", self.lease), "etcd session closed: lease revoked");
        Ok(())
    }

    /// Asks the server whether the lease still lives (after our key vanished: expiry, or an
    /// operator's delete?). An unanswered question counts as alive: the keepalive decides then.
    pub(crate) async fn lease_alive(&self) -> bool {
        let lease = self.lease;
        let leases = self.client.lease_client();
        match self.request("check the lease", &leases, |mut c| async move { c.time_to_live(lease, None).await }).await {
            Ok(response) => response.ttl() > 0,
            Err(LockError::SessionExpired { .. }) => false,
            Err(_) => true,
        }
    }
}

impl Drop for EtcdSession {
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        if self.life.is_ended() {
            return;
        }
        // Like etcd's Go session.Close(): revoke the lease, so nothing of ours waits for the TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (mut leases, lease, timeout) = (self.client.lease_client(), self.lease, self.config.request_timeout);
            runtime.spawn(async move {
                let _ = tokio::time::timeout(timeout, leases.revoke(lease)).await;
            });
        }
    }
}

/// How many keepalive streams in a row may fail before the session counts as suspended.
const QUICK_RETRIES: u32 = 3;

/// Keeps the lease alive while the session lives (the session aborts it when dropped): one
/// keepalive every TTL/3 on one stream; reopens the stream after errors; reports renewals,
/// expiry and silence through [`SessionLife`].
async fn keep_alive(
    life: Arc<SessionLife>,
    mut leases: etcd_client::LeaseClient,
    lease: i64,
    request_timeout: Duration,
) {
    let interval = life.clock().ttl() / 3;
    // Streams that failed in a row, since the last renewal. The first failures are tried again
    // at once: with one member of several down, a stream the channel put on the dead member
    // fails at once and the next goes to a live one. The session counts as suspended only when
    // the failures go on and no renewal came for a while (a second, or one keepalive interval
    // if shorter): a session just renewed is not out of touch because one member is down.
    let mut failures = 0u32;
    let broken = |failures: &mut u32| {
        *failures += 1;
        let clock = life.clock();
        let last_renewal = clock.deadline() + clock.margin() - clock.ttl();
        if *failures > QUICK_RETRIES && last_renewal.elapsed() > interval.min(Duration::from_secs(1)) {
            life.suspended();
        }
        Duration::from_millis(if *failures > QUICK_RETRIES { 200 } else { 10 })
    };
    let renew = async {
        loop {
            let opened = tokio::time::timeout(request_timeout, leases.keep_alive(lease)).await;
            let (mut keeper, mut stream) = match opened {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) if is_lease_not_found(&e) => {
                    life.expire();
                    return;
                }
                Ok(Err(_)) | Err(_) => {
                    tokio::time::sleep(broken(&mut failures)).await;
                    continue;
                }
            };
            let mut pending: VecDeque<Instant> = VecDeque::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        pending.push_back(Instant::now());
                        if keeper.keep_alive().await.is_err() {
                            break;
                        }
                    }
                    message = stream.message() => match message {
                        Ok(Some(response)) => {
                            let sent = pending.pop_front();
                            if response.ttl() <= 0 {
                                tracing::warn!(lease = format!("{lease:x}"), "etcd lease expired");
                                life.expire();
                                return;
                            }
                            if let Some(sent) = sent {
                                life.renewed(sent);
                                failures = 0;
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            tracing::debug!(lease = format!("{lease:x}"), "etcd keepalive stream broken; reopening");
            tokio::time::sleep(broken(&mut failures)).await;
        }
    };
    tokio::select! {
        _ = life.watch_silence() => {}
        _ = renew => {}
    }
}

/// A session on the tests' shared etcd, and a plain client beside it, for the tests that need
/// a real server.
#[cfg(test)]
pub(crate) async fn shared_test_session() -> (Arc<EtcdSession>, Client) {
    let shared = distlock_tests::shared::etcd().await;
    let config = crate::EtcdBackend::builder().endpoints(shared.endpoints.iter()).config().expect("config");
    let client = distlock_tests::etcd::connect(&shared.endpoints).await.expect("connect");
    let session = EtcdSession::open(client.clone(), Arc::new(config), Default::default()).await.expect("session");
    (session, client)
}
