//! Reading and following an election's leader, in the layout of Curator's LeaderLatch: the
//! candidates are the `-latch-` znodes of `<chroot>/<name>` ([`crate::layout`]), each with its
//! candidate's value as data, and the leader is the first by sequence number (campaigning itself
//! is the shared queue of [`crate::queue`]).
//!
//! An observer watches the leader's znode and the next candidate's (their data and their
//! deletion), or, while nobody leads, the directory: a candidate joining further back tells it
//! nothing. It reads the next candidate's value and term ahead, so when the leader's znode goes
//! it reports the next candidate at once, with no read, even if that one's term is already over
//! by the time it could read; then it lists the directory and reads the new next candidate.
//! ZooKeeper's watches fire once and carry no data, so each change costs an observer one
//! notification and about two reads; a term that begins and ends while the observer is
//! disconnected, or two that end within one of its reads, can still pass unseen.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distlock_core::backend::{LeaderFeed, Recipe, SessionSlot};
use distlock_core::{FencingToken, Leader, LockError};
use zookeeper_client::{Error as ZkError, EventType, OneshotWatcher};

use crate::config::ZkConfig;
use crate::layout::queue_order;
use crate::session::ZkSession;

/// A change notification to wait for.
type Change = std::pin::Pin<Box<dyn std::future::Future<Output = zookeeper_client::WatchedEvent> + Send>>;

fn change(watcher: OneshotWatcher) -> Change {
    Box::pin(watcher.changed())
}

/// What one read of the election found.
enum Read {
    /// The leader and the next candidate (if any), each with a watch on its znode.
    Leader(Leader, OneshotWatcher, Option<(Leader, OneshotWatcher)>),
    /// Nobody leads, with a watch on the directory (its children, or its creation).
    Nobody(OneshotWatcher),
    /// The queue changed under the read: read again.
    Moved,
}

/// The candidates' znodes in `dir`, in queue order.
async fn candidates(session: &ZkSession, dir: &str) -> Result<Vec<String>, LockError> {
    Ok(queue_order(crate::queue::list(session, dir).await?, Some(Recipe::Election)))
}

/// A candidate as a leader: its znode's data is its value, its czxid its term.
fn leader_of(data: &[u8], stat: &zookeeper_client::Stat) -> Leader {
    Leader { value: String::from_utf8_lossy(data).into_owned(), term: FencingToken::new(stat.czxid as u64) }
}

/// A candidate's value and term, with a watch on its znode; `None` if it is gone.
async fn read_candidate(session: &ZkSession, path: String) -> Result<Option<(Leader, OneshotWatcher)>, LockError> {
    session
        .request("read an election candidate", |client| {
            let path = path.clone();
            async move {
                match client.get_and_watch_data(&path).await {
                    Ok((data, stat, watcher)) => Ok(Some((leader_of(&data, &stat), watcher))),
                    Err(ZkError::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

/// Reads the leader of the election in `dir` and the next candidate, and watches what would
/// change them.
async fn read_and_watch(session: &ZkSession, dir: &str) -> Result<Read, LockError> {
    let queue = candidates(session, dir).await?;
    let Some(first) = queue.first() else {
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
    // Both reads in one round trip: each request is on the wire once its future is polled.
    let (leader, next) = tokio::join!(read_candidate(session, format!("{dir}/{first}")), async {
        match queue.get(1) {
            Some(second) => read_candidate(session, format!("{dir}/{second}")).await,
            None => Ok(None),
        }
    });
    match leader? {
        Some((leader, watcher)) => Ok(Read::Leader(leader, watcher, next?)),
        None => Ok(Read::Moved),
    }
}

/// The leader of the election in `dir`: a `sync` (the server we read from may be a follower that
/// has not applied the latest election yet: after the sync it has applied all the leader had at
/// that moment), a listing and the first candidate's data.
pub(crate) async fn leader(session: &ZkSession, dir: &str) -> Result<Option<Leader>, LockError> {
    crate::queue::catch_up(session, dir).await?;
    loop {
        let Some(first) = candidates(session, dir).await?.into_iter().next() else { return Ok(None) };
        let path = format!("{dir}/{first}");
        let read = session
            .request("read the election's leader", |client| {
                let path = path.clone();
                async move {
                    match client.get_data(&path).await {
                        Ok((data, stat)) => Ok(Some(leader_of(&data, &stat))),
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
    /// The change of the leader's znode (or of the directory, while nobody leads) that the last
    /// read watches for; `None` before the first read, and after a change that needs a read.
    pub(crate) leader_change: Option<Change>,
    /// The next candidate as read ahead, and the change of its znode.
    pub(crate) next: Option<(Leader, Change)>,
}

impl LeaderWatch {
    pub(crate) fn new(
        slot: Arc<SessionSlot<ZkSession>>,
        config: Arc<ZkConfig>,
        requests: Arc<AtomicU64>,
        dir: String,
    ) -> Self {
        LeaderWatch { slot, config, requests, dir, leader_change: None, next: None }
    }

    /// Waits for the leader's znode (or the directory) to change. `Some(leader)`: the leader's
    /// znode went while the next candidate's was still there, so that one leads now.
    async fn changed(&mut self) -> Option<Leader> {
        let leader_change = self.leader_change.as_mut()?;
        let event = loop {
            match self.next.as_mut() {
                None => break leader_change.await,
                Some((_, next_change)) => tokio::select! {
                    // The next candidate's change first: if both have come, it cannot be told
                    // whether the next candidate's znode went before the leader's (it never
                    // led) or after (it led briefly); never report one that may not have led.
                    biased;
                    _ = next_change => self.next = None,
                    event = &mut *leader_change => break event,
                },
            }
        };
        self.leader_change = None;
        tracing::debug!(dir = %self.dir, ?event, "election changed");
        let next = self.next.take();
        match (event.event_type, next) {
            (EventType::NodeDeleted, Some((next, _))) => Some(next),
            _ => None,
        }
    }
}

#[async_trait]
impl LeaderFeed for LeaderWatch {
    async fn next(&mut self) -> Result<Option<Leader>, LockError> {
        if let Some(next) = self.changed().await {
            // Read the new next candidate when asked next; report this one now.
            return Ok(Some(next));
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            let read = async {
                let session = self.slot.live(|| ZkSession::open(self.config.clone(), self.requests.clone())).await?;
                read_and_watch(&session, &self.dir).await
            };
            match read.await {
                Ok(Read::Leader(leader, watcher, next)) => {
                    self.leader_change = Some(change(watcher));
                    self.next = next.map(|(next, watcher)| (next, change(watcher)));
                    return Ok(Some(leader));
                }
                Ok(Read::Nobody(watcher)) => {
                    self.leader_change = Some(change(watcher));
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
