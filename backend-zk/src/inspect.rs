//! Reading queues for operators: one lock's, or every lock's under a directory.

use std::time::{Duration, SystemTime};

use distlock_core::{FencingToken, LockError, LockName, QueueEntry};

use crate::layout::{queue_order, sequence};
use crate::queue::{list, stat};
use crate::session::ZkSession;

/// The queue of `name` with each znode's czxid and creation time.
pub(crate) async fn inspect(session: &ZkSession, name: &LockName) -> Result<Vec<QueueEntry>, LockError> {
    let dir = session.config.lock_dir(name.as_str());
    entries(session, &dir, list(session, &dir).await?).await
}

/// The queues of every lock directory at `top` or below it, by name: one listing per directory,
/// one stat per lock znode. Lock znodes are ephemeral and have no children, so every other child
/// is a directory to descend into.
pub(crate) async fn inspect_all(session: &ZkSession, top: &str) -> Result<Vec<(LockName, Vec<QueueEntry>)>, LockError> {
    let root = session.config.lock_dir(""); // "<chroot>/"
    let mut locks = Vec::new();
    let mut dirs = vec![top.to_owned()];
    while let Some(dir) = dirs.pop() {
        let children = list(session, &dir).await?;
        let (znodes, subdirs): (Vec<String>, Vec<String>) = children.into_iter().partition(|c| sequence(c).is_some());
        dirs.extend(subdirs.iter().map(|child| format!("{}/{child}", dir.trim_end_matches('/'))));
        let name = dir.strip_prefix(&root).map(LockName::new);
        if let (false, Some(Ok(name))) = (znodes.is_empty(), name) {
            locks.push((name, entries(session, &dir, znodes).await?));
        }
    }
    Ok(locks)
}

/// The lock znodes among `children` of `dir` in queue order, as `inspect` lists them.
async fn entries(session: &ZkSession, dir: &str, children: Vec<String>) -> Result<Vec<QueueEntry>, LockError> {
    let mut entries = Vec::new();
    for child in queue_order(children, None) {
        let path = format!("{dir}/{child}");
        if let Some(stat) = stat(session, &path, "read a lock znode").await? {
            entries.push(QueueEntry {
                owner: child,
                token: FencingToken::new(stat.czxid as u64),
                since: SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(stat.ctime.max(0) as u64)),
            });
        }
    }
    Ok(entries)
}
