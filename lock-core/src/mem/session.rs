//! One client session with the in-process server: the keepalive loop, the lease clock that fires
//! held locks' loss signals when the server has been silent too long, and the simulated network
//! (partition, dropped replies) that tests use to inject faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::server::{Enqueued, MemServer, QueueId, Refused};
use crate::backend::{PendingCleanups, Recipe, SessionLife};
use crate::{LockError, LockName};

/// The client's simulated network to the server, shared by all its sessions.
#[derive(Debug, Default)]
pub(crate) struct Network {
    pub(crate) partitioned: watch::Sender<bool>,
    pub(crate) replies_to_drop: AtomicU64,
    pub(crate) replies_dropped: AtomicU64,
}

impl Network {
    pub(crate) fn is_partitioned(&self) -> bool {
        *self.partitioned.borrow()
    }

    /// Waits until the network is healed.
    pub(crate) async fn healed(&self) {
        let mut rx = self.partitioned.subscribe();
        // The sender lives in `self`; an error cannot happen while we borrow it.
        let _ = rx.wait_for(|p| !*p).await;
    }

    /// Whether the reply to the request just served is lost on the way back.
    pub(crate) fn reply_lost(&self) -> bool {
        let dropped =
            self.replies_to_drop.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if dropped {
            self.replies_dropped.fetch_add(1, Ordering::SeqCst);
        }
        dropped
    }
}

/// A session: alive on the server until it expires or is closed.
#[derive(Debug)]
pub(crate) struct MemSession {
    pub(crate) shared: Arc<SessionShared>,
    keepalive: JoinHandle<()>,
}

#[derive(Debug)]
pub(crate) struct SessionShared {
    pub(crate) server: MemServer,
    pub(crate) id: u64,
    pub(crate) ttl: Duration,
    pub(crate) life: SessionLife,
    pub(crate) net: Arc<Network>,
    /// Cancelled by the server when the session ends there (the client learns it when connected).
    pub(crate) server_ended: CancellationToken,
    /// Entries being removed in the background (cut off when cancelled or released).
    pub(crate) cleanups: PendingCleanups,
}

impl MemSession {
    pub(crate) fn open(server: &MemServer, ttl: Duration, net: Arc<Network>) -> Result<Self, LockError> {
        if net.is_partitioned() {
            return Err(unreachable_error("open a session"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| LockError::Backend {
            backend: "mem",
            op: "open session (call it inside a tokio runtime)".into(),
            retryable: false,
            source: Box::new(e),
        })?;
        let sent = Instant::now();
        let (id, server_ended) = server.open_session(ttl);
        let life = SessionLife::new("mem", ttl);
        life.renewed(sent);
        let cleanups = PendingCleanups::default();
        let shared = Arc::new(SessionShared { server: server.clone(), id, ttl, life, net, server_ended, cleanups });
        let keepalive = runtime.spawn(shared.clone().keep_alive_loop());
        tracing::debug!(session = id, ttl_ms = ttl.as_millis() as u64, "mem session opened");
        Ok(MemSession { shared, keepalive })
    }
}

impl Drop for MemSession {
    fn drop(&mut self) {
        // Like closing a ZooKeeper session: the server forgets it at once.
        self.keepalive.abort();
        self.shared.server.close_session(self.shared.id);
    }
}

pub(crate) fn unreachable_error(what: &str) -> LockError {
    LockError::Unreachable { endpoints: "mem://".into(), what: what.into(), source: None }
}

impl SessionShared {
    /// Removes the entry `token` of `queue` now if the server is reachable; else once the
    /// network heals, in the background, unless the session ends first. Until then this session
    /// does not queue there again.
    pub(crate) fn remove_entry(self: &Arc<Self>, queue: &QueueId, token: crate::FencingToken) {
        if !self.net.is_partitioned() {
            self.server.remove(queue, token);
            return;
        }
        let (shared, queue_owned, label) = (self.clone(), queue.clone(), queue.label());
        self.cleanups.start(&label).retry_until_done(format!("{label} {token}"), move || {
            let (shared, queue) = (shared.clone(), queue_owned.clone());
            async move {
                tokio::select! {
                    _ = shared.net.healed() => {
                        shared.server.remove(&queue, token);
                        Ok(())
                    }
                    _ = shared.server_ended.cancelled() => Err(LockError::SessionExpired { during: "removing an entry".into() }),
                }
            }
        });
    }

    async fn keep_alive_loop(self: Arc<Self>) {
        tokio::select! {
            _ = self.life.watch_silence() => {}
            _ = self.renew_loop() => {}
        }
    }

    async fn renew_loop(&self) {
        let mut partitioned = self.net.partitioned.subscribe();
        loop {
            let cut = *partitioned.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep(self.ttl / 3) => {
                    if cut {
                        self.life.suspended();
                    } else if !self.renew() {
                        return;
                    }
                }
                _ = self.server_ended.cancelled(), if !cut => {
                    self.life.expire();
                    return;
                }
                changed = partitioned.changed() => {
                    if changed.is_err() || (!*partitioned.borrow() && !self.renew()) {
                        return;
                    }
                }
            }
        }
    }

    /// One keepalive. Returns false once the session is over.
    fn renew(&self) -> bool {
        let sent = Instant::now();
        match self.server.keep_alive(self.id) {
            Ok(()) => {
                self.life.renewed(sent);
                true
            }
            Err(_) => {
                self.life.expire();
                false
            }
        }
    }

    pub(crate) fn expired_error(&self, during: &str) -> LockError {
        LockError::SessionExpired { during: during.into() }
    }

    /// Enqueues, retrying when the reply is lost: the server finds the session's own entry.
    pub(crate) fn enqueue(&self, name: &LockName, recipe: Recipe, value: &[u8]) -> Result<Enqueued, LockError> {
        loop {
            if self.net.is_partitioned() {
                return Err(unreachable_error("queue for the lock"));
            }
            let sent = Instant::now();
            let reply = self.server.enqueue(self.id, name, recipe, value);
            if self.net.reply_lost() {
                tracing::debug!(lock = %name, "mem: enqueue reply lost; retrying");
                continue;
            }
            return match reply {
                Ok(enqueued) => {
                    self.life.renewed(sent);
                    Ok(enqueued)
                }
                Err(Refused::PermitsMismatch(queued)) => Err(LockError::PermitsMismatch {
                    name: name.to_string(),
                    queued,
                    asked: match recipe {
                        Recipe::Permit(permits) => permits.get(),
                        _ => 0,
                    },
                }),
                Err(Refused::SessionGone) => {
                    self.life.expire();
                    Err(self.expired_error(&format!("queuing for lock {name:?}")))
                }
            };
        }
    }
}
