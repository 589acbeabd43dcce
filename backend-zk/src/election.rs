//! Reading and following an election's leader, in the layout of Curator's LeaderLatch: the
//! candidates are the `-latch-` znodes of `<chroot>/<name>` ([`crate::layout`]), each with its
//! candidate's value as data, and the leader is the first by sequence number (campaigning itself
//! is the shared queue of [`crate::queue`]).
//!
//! An observer watches only the leader's znode (its data and its deletion), or, while nobody
//! leads, the directory: a candidate joining behind the leader tells it nothing. Each change
//! costs it one notification and the reads that name the new leader (a listing and the new
//! leader's data), since ZooKeeper's watches fire once and carry no data.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distlock_core::backend::{LeaderFeed, Recipe, SessionSlot};
use distlock_core::{FencingToken, Leader, LockError};
use zookeeper_client::{Error as ZkError, OneshotWatcher};

use crate::config::ZkConfig;
use crate::layout::queue_order;
use crate::session::ZkSession;

/// What one read of the election found.
enum Read {
    /// The leader, with a watch on its znode.
    Leader(Leader, OneshotWatcher),
    /// Nobody leads, with a watch on the directory (its children, or its creation).
    Nobody(OneshotWatcher),
    /// The queue changed under the read: read again.
    Moved,
}

/// The first candidate's znode in `dir`, if any.
async fn first_candidate(session: &ZkSession, dir: &str) -> Result<Option<String>, LockError> {
    let children = crate::queue::list(session, dir).await?;
    Ok(queue_order(children, Some(Recipe::Election)).into_iter().next())
}

/// Reads the leader of the election in `dir` and watches what would change it.
async fn read_and_watch(session: &ZkSession, dir: &str) -> Result<Read, LockError> {
    let Some(first) = first_candidate(session, dir).await? else {
        let dir = dir.to_owned();
        return session
            .request("watch the election's directory", |client| {
                let dir = dir.clone();
                async move {
                    match client.get_and_watch_children(&dir).await {
                        Ok((children, _, watcher)) => match queue_order(children, Some(Recipe::Election)).is_empty() {
                            true => Ok(Read::Nobody(watcher)),
                            false => Ok(Read::Moved),
                        },
                        Err(ZkError::NoNode) => match client.check_and_watch_stat(&dir).await? {
                            (None, watcher) => Ok(Read::Nobody(watcher)),
                            (Some(_), _) => Ok(Read::Moved),
                        },
                        Err(e) => Err(e),
                    }
                }
            })
            .await;
    };
    let path = format!("{dir}/{first}");
    session
        .request("read the election's leader", |client| {
            let path = path.clone();
            async move {
                match client.get_and_watch_data(&path).await {
                    Ok((data, stat, watcher)) => Ok(Read::Leader(
                        Leader {
                            value: String::from_utf8_lossy(&data).into_owned(),
                            term: FencingToken::new(stat.czxid as u64),
                        },
                        watcher,
                    )),
                    Err(ZkError::NoNode) => Ok(Read::Moved),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

/// The leader of the election in `dir`: a listing and the first candidate's data.
pub(crate) async fn leader(session: &ZkSession, dir: &str) -> Result<Option<Leader>, LockError> {
    loop {
        let Some(first) = first_candidate(session, dir).await? else { return Ok(None) };
        let path = format!("{dir}/{first}");
        let read = session
            .request("read the election's leader", |client| {
                let path = path.clone();
                async move {
                    match client.get_data(&path).await {
                        Ok((data, stat)) => Ok(Some(Leader {
                            value: String::from_utf8_lossy(&data).into_owned(),
                            term: FencingToken::new(stat.czxid as u64),
                        })),
                        Err(ZkError::NoNode) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        if let Some(leader) = read {
            return Ok(Some(leader));
        }
    }
}

/// Follows one election's leader (see the module's comment). Reads with the client's current
/// session, opening a new one if it expired.
pub(crate) struct LeaderWatch {
    pub(crate) slot: Arc<SessionSlot<ZkSession>>,
    pub(crate) config: Arc<ZkConfig>,
    pub(crate) requests: Arc<AtomicU64>,
    pub(crate) dir: String,
    /// The watch set by the last read; `None` before the first.
    pub(crate) watcher: Option<OneshotWatcher>,
}

#[async_trait]
impl LeaderFeed for LeaderWatch {
    async fn next(&mut self) -> Result<Option<Leader>, LockError> {
        if let Some(watcher) = self.watcher.take() {
            let event = watcher.changed().await;
            tracing::debug!(dir = %self.dir, ?event, "election changed");
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            let read = async {
                let session = self.slot.live(|| ZkSession::open(self.config.clone(), self.requests.clone())).await?;
                read_and_watch(&session, &self.dir).await
            };
            match read.await {
                Ok(Read::Leader(leader, watcher)) => {
                    self.watcher = Some(watcher);
                    return Ok(Some(leader));
                }
                Ok(Read::Nobody(watcher)) => {
                    self.watcher = Some(watcher);
                    return Ok(None);
                }
                Ok(Read::Moved) => continue,
                Err(error @ LockError::Closed) => return Err(error),
                Err(error) if error.is_retryable() || matches!(error, LockError::SessionExpired { .. }) => {
                    tracing::debug!(dir = %self.dir, %error, "election read failed: retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => return Err(error),
            }
        }
    }
}
