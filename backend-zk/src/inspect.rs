//! Reading queues for operators: one name's, or every name's under a directory. A directory
//! holds a queue per recipe (a lock's, an election's, a read-write lock's, a semaphore's).

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use distlock_core::backend::Recipe;
use distlock_core::{FencingToken, LockError, LockName, QueueEntry};

use crate::layout::{queue_order, recipe_of, sequence};
use crate::queue::{catch_up, list, stat};
use crate::session::ZkSession;

/// One recipe of each queue a directory can hold, in the order `inspect` shows them.
const QUEUES: [Recipe; 4] = [Recipe::Lock, Recipe::Election, Recipe::Read, Recipe::Permit(NonZeroU32::MIN)];

/// The queues of `name` (see [`QUEUES`]), each with its znodes' czxids and creation times, as
/// of this call: a sync first, so that a follower's lag does not hide an entry another client
/// has seen queued.
pub(crate) async fn inspect(session: &ZkSession, name: &LockName) -> Result<Vec<Vec<QueueEntry>>, LockError> {
    let dir = session.config.lock_dir(name.as_str());
    catch_up(session, &dir).await?;
    queues(session, &dir, list(session, &dir).await?).await
}

/// The queues of every lock directory at `top` or below it, by name: one listing per directory,
/// one stat per lock znode. Lock znodes are ephemeral and have no children, so every other child
/// is a directory to descend into. A sync of `top` first, as for [`inspect`].
pub(crate) async fn inspect_all(session: &ZkSession, top: &str) -> Result<Vec<(LockName, Vec<QueueEntry>)>, LockError> {
    let root = session.config.lock_dir(""); // "<chroot>/"
    catch_up(session, top).await?;
    let mut locks = Vec::new();
    let mut dirs = vec![top.to_owned()];
    while let Some(dir) = dirs.pop() {
        let children = list(session, &dir).await?;
        let (znodes, subdirs): (Vec<String>, Vec<String>) = children.into_iter().partition(|c| sequence(c).is_some());
        dirs.extend(subdirs.iter().map(|child| format!("{}/{child}", dir.trim_end_matches('/'))));
        let name = dir.strip_prefix(&root).map(LockName::new);
        if let (false, Some(Ok(name))) = (znodes.is_empty(), name) {
            for queue in queues(session, &dir, znodes).await?.into_iter().filter(|q| !q.is_empty()) {
                locks.push((name.clone(), queue));
            }
        }
    }
    Ok(locks)
}

/// The queues among `children` of `dir` (see [`QUEUES`]), each in queue order, as `inspect`
/// lists them.
async fn queues(session: &ZkSession, dir: &str, children: Vec<String>) -> Result<Vec<Vec<QueueEntry>>, LockError> {
    let mut queues = Vec::new();
    for recipe in QUEUES {
        let mut entries = Vec::new();
        for child in queue_order(children.clone(), Some(recipe)) {
            let path = format!("{dir}/{child}");
            let Some(kind) = recipe_of(&child).map(Recipe::entry_kind) else { continue };
            if let Some(stat) = stat(session, &path, "read a queue znode").await? {
                entries.push(QueueEntry {
                    owner: child,
                    token: FencingToken::new(stat.czxid as u64),
                    since: SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(stat.ctime.max(0) as u64)),
                    kind,
                });
            }
        }
        queues.push(entries);
    }
    Ok(queues)
}
