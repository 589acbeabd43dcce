//! Reading and following an election's leader, in the layout of etcd's Go
//! `concurrency.Election`: the candidates are the keys of the queue `<prefix>/<name>/`, each
//! key's value is its candidate's value, and the leader is the key with the lowest create
//! revision (campaigning itself is the lock's queue, with the value in the key).
//!
//! An observer reads the queue once and then watches the whole queue range from the revision
//! after that read, keeping the queue in memory: every change reaches it as one notification
//! and it never reads again (no re-read per change, unlike Go's `Observe`, which reads the new
//! leader after each deletion). A broken stream is re-created from the first revision not yet
//! seen; a compacted one re-reads.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use distlock_core::{backend::LeaderFeed, FencingToken, Leader, LockError};
use etcd_client::{Client, EventType, GetOptions, KeyValue, SortOrder, SortTarget, WatchOptions, WatchStream};

use crate::errors::request_error;
use crate::layout::is_queue_key;
use crate::session::EtcdSession;

/// The candidates of one election's queue, by create revision.
#[derive(Debug, Default)]
struct Candidates {
    by_revision: BTreeMap<i64, Vec<u8>>,
    revision_of: HashMap<Vec<u8>, i64>,
}

impl Candidates {
    fn put(&mut self, kv: &KeyValue) {
        if let Some(old) = self.revision_of.insert(kv.key().to_vec(), kv.create_revision()) {
            self.by_revision.remove(&old);
        }
        self.by_revision.insert(kv.create_revision(), kv.value().to_vec());
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(revision) = self.revision_of.remove(key) {
            self.by_revision.remove(&revision);
        }
    }

    fn leader(&self) -> Option<Leader> {
        self.by_revision.first_key_value().map(|(&revision, value)| Leader {
            value: String::from_utf8_lossy(value).into_owned(),
            term: FencingToken::new(revision as u64),
        })
    }
}

/// Reads the queue under `queue_prefix` with values: the candidates and the read's revision.
async fn read_candidates(
    mut kv: etcd_client::KvClient,
    queue_prefix: String,
) -> Result<(Candidates, i64), etcd_client::Error> {
    let options = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
    let response = kv.get(queue_prefix.as_str(), Some(options)).await?;
    let mut candidates = Candidates::default();
    for kv in response.kvs().iter().filter(|kv| is_queue_key(&queue_prefix, kv.key())) {
        candidates.put(kv);
    }
    Ok((candidates, response.header().map(|h| h.revision()).unwrap_or_default()))
}

/// The leader of the election whose queue is `queue_prefix`: one read, retried as the session's
/// requests are (an endpoint that is down, a reset connection).
pub(crate) async fn leader(session: &EtcdSession, queue_prefix: &str) -> Result<Option<Leader>, LockError> {
    let read = session
        .request("read the election's candidates", &session.kv, |kv| read_candidates(kv, queue_prefix.to_owned()));
    Ok(read.await?.0.leader())
}

/// Follows one election's leader (see the module's comment).
pub(crate) struct LeaderWatch {
    client: Client,
    endpoints: String,
    queue_prefix: String,
    candidates: Candidates,
    /// Every change up to this revision is in `candidates`; `None` before the first read.
    seen: Option<i64>,
    stream: Option<WatchStream>,
    /// Leaders heard but not yet returned, oldest first.
    heard: VecDeque<Option<Leader>>,
}

impl LeaderWatch {
    pub(crate) fn new(client: Client, endpoints: String, queue_prefix: String) -> Self {
        LeaderWatch {
            client,
            endpoints,
            queue_prefix,
            candidates: Candidates::default(),
            seen: None,
            stream: None,
            heard: VecDeque::new(),
        }
    }

    /// Reads the queue afresh (at the start, and after a compaction of the history).
    async fn read(&mut self) -> Result<(), LockError> {
        let read = read_candidates(self.client.kv_client(), self.queue_prefix.clone()).await;
        let (candidates, revision) =
            read.map_err(|e| request_error("read the election's candidates", &self.endpoints, e))?;
        self.candidates = candidates;
        self.seen = Some(revision);
        self.heard.push_back(self.candidates.leader());
        Ok(())
    }

    /// Applies one watch response: every event in order, noting the leader after each.
    fn apply(&mut self, response: &etcd_client::WatchResponse) {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            // Only events move `seen` (a response's header may run ahead of the events it
            // carries), so a re-created watch misses nothing.
            if !is_queue_key(&self.queue_prefix, kv.key()) {
                continue;
            }
            let before = self.candidates.leader();
            match event.event_type() {
                EventType::Put => self.candidates.put(kv),
                EventType::Delete => self.candidates.delete(kv.key()),
            }
            let after = self.candidates.leader();
            if after != before {
                self.heard.push_back(after);
            }
            self.seen = Some(self.seen.unwrap_or_default().max(kv.mod_revision()));
        }
    }

    /// Waits for the next watch response and applies it; re-creates a broken stream.
    async fn listen(&mut self, seen: i64) -> Result<(), LockError> {
        if self.stream.is_none() {
            let options = WatchOptions::new().with_prefix().with_start_revision(seen + 1);
            let stream = self
                .client
                .watch_client()
                .watch(self.queue_prefix.as_str(), Some(options))
                .await
                .map_err(|e| request_error("watch the election", &self.endpoints, e))?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else { return Ok(()) };
        match stream.message().await {
            Ok(Some(response)) if response.compact_revision() > 0 => {
                tracing::debug!(prefix = %self.queue_prefix, "election history compacted: reading the candidates again");
                self.stream = None;
                self.read().await
            }
            Ok(Some(response)) if response.canceled() => {
                self.stream = None;
                Ok(())
            }
            Ok(Some(response)) => {
                self.apply(&response);
                Ok(())
            }
            Ok(None) => {
                self.stream = None;
                Ok(())
            }
            Err(e) => {
                self.stream = None;
                Err(request_error("watch the election", &self.endpoints, e))
            }
        }
    }
}

#[async_trait]
impl LeaderFeed for LeaderWatch {
    async fn next(&mut self) -> Result<Option<Leader>, LockError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(leader) = self.heard.pop_front() {
                return Ok(leader);
            }
            let step = match self.seen {
                None => self.read().await,
                Some(seen) => self.listen(seen).await,
            };
            match step {
                Ok(()) => backoff = Duration::from_millis(50),
                // A server restart or a leader change: try again from where it stood.
                Err(error) if error.is_retryable() => {
                    tracing::debug!(prefix = %self.queue_prefix, %error, "election watch failed: retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => return Err(error),
            }
        }
    }
}
