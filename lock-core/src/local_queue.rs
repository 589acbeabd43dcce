//! The per-client local queue (docs/DESIGN.md, semantic 9): tasks of one client that want the same name line
//! up here in FIFO order, and only the head takes a place in the server's queue. A name's lock
//! and election (one queue on etcd) share a local queue; its read-write lock and its semaphore,
//! queues of their own on every server, have their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as FairMutex, OwnedMutexGuard};

use crate::backend::{QueueKind, Recipe};
use crate::LockName;

/// One client's local queues, by name. `tokio::sync::Mutex` is FIFO-fair, which gives the order.
#[derive(Debug, Default)]
pub(crate) struct LocalQueues {
    queues: Mutex<HashMap<LocalKey, Arc<FairMutex<()>>>>,
    /// The recipe of each queue's hold, while a task of this client holds it.
    held: Mutex<HashMap<LocalKey, Recipe>>,
}

/// Which local queue: a name and the kind of server queue its recipe joins.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LocalKey {
    name: LockName,
    kind: QueueKind,
}

impl LocalKey {
    /// The local queue of `recipe`'s entries for `name`.
    pub(crate) fn new(name: &LockName, recipe: Recipe) -> Self {
        LocalKey { name: name.clone(), kind: recipe.queue_kind() }
    }
}

/// A task's membership in a local queue; removes the queue from the map when its last member
/// leaves, so names that are no longer used cost nothing.
#[derive(Debug)]
pub(crate) struct LocalSlot {
    queues: Arc<LocalQueues>,
    key: LocalKey,
    queue: Arc<FairMutex<()>>,
}

/// The turn at the head of a local queue; the next local task goes on when it is dropped.
#[derive(Debug)]
pub(crate) struct LocalTurn {
    // Field order matters: the turn is given up before the slot checks whether it was the last.
    _turn: OwnedMutexGuard<()>,
    slot: LocalSlot,
    holds: bool,
}

impl LocalQueues {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<LocalKey, Arc<FairMutex<()>>>> {
        // Every critical section below is a single map operation: poison cannot leave it broken.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the local queue `key`.
    pub(crate) fn join(self: &Arc<Self>, key: &LocalKey) -> LocalSlot {
        let queue = self.map().entry(key.clone()).or_default().clone();
        LocalSlot { queues: self.clone(), key: key.clone(), queue }
    }

    /// The recipe of this client's hold in the local queue `key`, while a task of this client
    /// holds it.
    pub(crate) fn held(&self, key: &LocalKey) -> Option<Recipe> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied()
    }
}

impl LocalTurn {
    /// Records that this turn now holds as `recipe` (the server granted it), until the turn is
    /// given up.
    pub(crate) fn holds(&mut self, recipe: Recipe) {
        let queues = &self.slot.queues;
        queues.held.lock().unwrap_or_else(|p| p.into_inner()).insert(self.slot.key.clone(), recipe);
        self.holds = true;
    }
}

impl Drop for LocalTurn {
    fn drop(&mut self) {
        if self.holds {
            let queues = &self.slot.queues;
            queues.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.slot.key);
        }
    }
}

impl LocalSlot {
    /// Waits for this task's turn (FIFO among the client's tasks).
    ///
    /// Cancel safe: a dropped wait leaves the queue.
    pub(crate) async fn turn(self) -> LocalTurn {
        let turn = self.queue.clone().lock_owned().await;
        LocalTurn { _turn: turn, slot: self, holds: false }
    }

    /// Takes the turn only if no other local task has it or waits for it.
    pub(crate) fn try_turn(self) -> Option<LocalTurn> {
        let turn = self.queue.clone().try_lock_owned().ok()?;
        Some(LocalTurn { _turn: turn, slot: self, holds: false })
    }
}

impl Drop for LocalSlot {
    fn drop(&mut self) {
        let mut map = self.queues.map();
        // Only the map's reference and this slot's are left: nobody else waits or holds a turn.
        // (A turn gives up its guard, and a cancelled wait its future, before the slot drops.)
        if map.get(&self.key).is_some_and(|q| Arc::ptr_eq(q, &self.queue) && Arc::strong_count(q) == 2) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
impl LocalQueues {
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_are_fifo_and_unused_names_are_forgotten() {
        let queues = Arc::new(LocalQueues::default());
        let name = LocalKey::new(&LockName::new("a").unwrap(), Recipe::Lock);
        let first = queues.join(&name).turn().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..5 {
            let (queues, name, order) = (queues.clone(), name.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let turn = queues.join(&name).turn().await;
                order.lock().unwrap().push(i);
                drop(turn);
            }));
            // Let waiter i queue before waiter i+1 starts.
            tokio::task::yield_now().await;
        }
        assert!(queues.join(&name).try_turn().is_none(), "a held name is busy for try_turn");
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(queues.len(), 0, "the queue is forgotten once nobody uses it");
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_nothing() {
        let queues = Arc::new(LocalQueues::default());
        let name = LocalKey::new(&LockName::new("a").unwrap(), Recipe::Lock);
        let held = queues.join(&name).turn().await;
        let waited = tokio::time::timeout(Duration::from_millis(10), queues.join(&name).turn()).await;
        assert!(waited.is_err());
        drop(held);
        assert_eq!(queues.len(), 0);
        let again = queues.join(&name).try_turn();
        assert!(again.is_some(), "after the cancelled wait the name is free");
    }
}
