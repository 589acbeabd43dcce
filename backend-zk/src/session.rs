//! One ZooKeeper session: the client connection, a probe that keeps the lease clock (the client
//! library's own pings are not visible), the session-state watcher, the request counter, and
//! what the session learned about the lock directories it queues in.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distlock_core::{
    backend::{retry_request, PendingCleanups, RecentContention, ReleaseRecords, RetryPolicy, SessionLife},
    LockError,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zookeeper_client::{Client, Error as ZkError, SessionState as ZkState};

use crate::config::ZkConfig;
use crate::errors::{classify, request_error};

/// A session: one `zookeeper-client` connection and what the client knows about it.
pub(crate) struct ZkSession {
    /// The client's one handle that the session keeps; `close` takes it (see [`ZkSession::client`]).
    client: std::sync::Mutex<Option<Client>>,
    /// The session's id and password, as the server gave them.
    session: zookeeper_client::SessionInfo,
    pub(crate) config: Arc<ZkConfig>,
    pub(crate) life: Arc<SessionLife>,
    /// The negotiated session timeout.
    pub(crate) timeout: Duration,
    requests: Arc<AtomicU64>,
    watcher: JoinHandle<()>,
    /// Deletes of cancelled waiters' znodes still in flight, by lock directory: the session
    /// queues again under that lock only once they are done (one znode per waiter).
    pub(crate) cleanups: PendingCleanups,
    /// Where the session last met other znodes (those queue without asking whether alone).
    pub(crate) contention: RecentContention,
    /// Whether lock directories' ACLs let us write their data: once one refused, releases are
    /// plain deletes and queuing does not ask whether it is alone (both write the directory's data).
    directory_data: ReleaseRecords,
    /// Where releasing permit holders tell this session's waiting permits they are granted.
    pub(crate) mailbox: crate::permit_mailbox::PermitMailbox,
    /// The semaphores where the session's releases lately left N or more queued (someone to
    /// admit): there a release lists the queue in the same round trip as its multi.
    pub(crate) permits_admitting: RecentContention,
    /// The semaphores whose number of permits the session checked lately, by lock directory.
    pub(crate) permit_checks: crate::queue::permits::PermitChecks,
}

impl distlock_core::backend::HasLife for ZkSession {
    fn life(&self) -> &SessionLife {
        &self.life
    }
}

impl std::fmt::Debug for ZkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkSession")
            .field("session_id", &self.session.id())
            .field("timeout", &self.timeout)
            .field("life", &self.life)
            .finish()
    }
}

impl ZkSession {
    /// Connects (a new session) within the connect timeout.
    pub(crate) async fn open(config: Arc<ZkConfig>, requests: Arc<AtomicU64>) -> Result<Arc<Self>, LockError> {
        let mut connector = Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(config.connect_timeout);
        if let Some((user, password)) = &config.digest {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let sent = Instant::now();
        let hosts = config.hosts_label();
        let client = tokio::time::timeout(config.connect_timeout, connector.connect(&hosts))
            .await
            .map_err(|_| LockError::Unreachable {
                endpoints: hosts.clone(),
                what: format!("connect (no session within {:?})", config.connect_timeout),
                source: None,
            })?
            .map_err(|e| request_error("connect", &hosts, Some(e)))?;
        requests.fetch_add(1, Ordering::Relaxed);
        let timeout = client.session_timeout();
        let life = Arc::new(SessionLife::new("zookeeper", timeout));
        life.renewed(sent);
        let watcher = tokio::spawn(watch_session(client.clone(), life.clone(), timeout));
        tracing::info!(session = ?client.session_id(), timeout_ms = timeout.as_millis() as u64, "zookeeper session opened");
        Ok(Arc::new(ZkSession {
            session: client.session().clone(),
            client: std::sync::Mutex::new(Some(client)),
            config,
            life,
            timeout,
            requests,
            watcher,
            cleanups: PendingCleanups::default(),
            contention: RecentContention::default(),
            directory_data: ReleaseRecords::default(),
            mailbox: Default::default(),
            permits_admitting: RecentContention::default(),
            permit_checks: Default::default(),
        }))
    }

    /// A handle of the session's client, for one request: `ClientClosed` once the session was
    /// closed. zookeeper-client sends closeSession when the last handle drops, so handles
    /// must not be kept beyond the request (or the watch) they are taken for.
    pub(crate) fn client(&self) -> Result<Client, ZkError> {
        self.client.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(ZkError::ClientClosed)
    }

    /// The client's handle in tests, which run on an open session.
    #[cfg(test)]
    pub(crate) fn test_client(&self) -> Client {
        self.client().expect("an open session")
    }

    /// The session's id, as the server gave it.
    pub(crate) fn id(&self) -> zookeeper_client::SessionId {
        self.session.id()
    }

    /// The path of this session's permit mailbox ([`crate::layout::permit_mailbox`]).
    pub(crate) fn own_mailbox(&self) -> String {
        crate::layout::permit_mailbox(&self.config.chroot, &format!("{:016x}", self.id().0 as u64))
    }

    /// Ends the session on the server (its life already ended as closed, which ends our waits,
    /// hold watches and the session watcher, and with them their handles): drops the kept
    /// handle of the client, whose library then sends closeSession, and waits for the server's
    /// answer. Its ephemeral znodes, ours in every queue, are gone when this returns `Ok`.
    pub(crate) async fn close(&self) -> Result<(), LockError> {
        let Some(client) = self.client.lock().unwrap_or_else(|p| p.into_inner()).take() else { return Ok(()) };
        let mut states = client.state_watcher();
        drop(client);
        self.count();
        let bound = self.config.connect_timeout.max(self.timeout / 3);
        let closed = async { while !states.changed().await.is_terminated() {} };
        if tokio::time::timeout(bound, closed).await.is_err() {
            return Err(LockError::Unreachable {
                endpoints: self.config.hosts_label(),
                what: format!(
                    "close the session (not confirmed within {bound:?}: the server is silent, or a handle from \
                     ZkBackend::client is still in use; the server ends the session with its timeout)"
                ),
                source: None,
            });
        }
        tracing::info!(session = ?self.id(), "zookeeper session closed");
        Ok(())
    }

    /// Counts one request to the server.
    pub(crate) fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        distlock_core::backend::server_request("zookeeper");
    }

    /// The requests counted so far (by all sessions sharing the counter).
    #[cfg(test)]
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether a lock directory's ACL has refused us its data (see [`Self::refuse_directory_data`]).
    pub(crate) fn directory_data_refused(&self) -> bool {
        !self.directory_data.allowed()
    }

    /// Records that `dir`'s ACL refused us its data: from now on the session's releases are plain
    /// deletes (the waiter behind lists the queue) and its queuing lists at once. Warns once.
    pub(crate) fn refuse_directory_data(&self, dir: &str) {
        self.directory_data.refuse(
            "zookeeper",
            dir,
            "NoAuth on setData",
            "grant WRITE on lock directories to restore them",
        );
    }

    /// The bound on one request: a third of the session timeout, at most 5 s.
    pub(crate) fn policy(&self) -> RetryPolicy {
        RetryPolicy::new((self.timeout / 3).min(Duration::from_secs(5)))
    }

    /// Runs an idempotent request, retrying connection loss within the policy.
    pub(crate) async fn request<T, F, Fut>(&self, op: &str, mut attempt: F) -> Result<T, LockError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, zookeeper_client::Error>>,
    {
        let hosts = self.config.hosts_label();
        let result = retry_request(
            &self.life,
            self.policy(),
            classify,
            |e| request_error(op, &hosts, e),
            || self.count(),
            || {
                let request = self.client().map(&mut attempt);
                async move {
                    match request {
                        Ok(request) => request.await,
                        Err(closed) => Err(closed),
                    }
                }
            },
            op,
        )
        .await;
        self.end_if_expired(result)
    }

    /// Ends the session's life at once where the server said it expired, so that the next call
    /// opens a new session rather than meeting the expiry again before the state event arrives.
    pub(crate) fn end_if_expired<T>(&self, result: Result<T, LockError>) -> Result<T, LockError> {
        if matches!(result, Err(LockError::SessionExpired { .. })) {
            self.life.expire();
        }
        result
    }
}

impl Drop for ZkSession {
    fn drop(&mut self) {
        // The session closes once the last client handle is dropped (ephemeral nodes go at once).
        self.watcher.abort();
    }
}

/// Follows the client library's session state and probes the server every third of the
/// timeout, so the lease clock knows when the server was last heard from.
async fn watch_session(client: Client, life: Arc<SessionLife>, timeout: Duration) {
    let probe = async {
        loop {
            tokio::time::sleep(timeout / 3).await;
            let sent = Instant::now();
            match tokio::time::timeout(timeout / 3, client.check_stat("/")).await {
                Ok(Ok(_)) => life.renewed(sent),
                Ok(Err(zookeeper_client::Error::SessionExpired)) => {
                    life.expire();
                    return;
                }
                Ok(Err(_)) | Err(_) => life.suspended(),
            }
        }
    };
    let states = async {
        let mut states = client.state_watcher();
        loop {
            match states.changed().await {
                ZkState::Disconnected => life.suspended(),
                ZkState::SyncConnected | ZkState::ConnectedReadOnly => {}
                ZkState::Expired | ZkState::Closed | ZkState::AuthFailed => {
                    tracing::warn!("zookeeper session ended");
                    life.expire();
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = life.watch_silence() => {}
        _ = probe => {}
        _ = states => {}
    }
}

/// A session on the tests' shared ZooKeeper, for the tests that need a real server.
#[cfg(test)]
pub(crate) async fn shared_test_session() -> Arc<ZkSession> {
    let shared = distlock_tests::shared::zookeeper().await;
    let config = crate::ZkBackend::builder().hosts(shared.endpoints.iter()).config().expect("config");
    ZkSession::open(Arc::new(config), Arc::default()).await.expect("session")
}
