//! The grants a session hears on its wake channel (`g <token> <queue key>`, published by the
//! script that admitted the entry), handed to the waiter of that queue. A waiter registers
//! before it queues, so a grant that comes right after its queuing reply is not missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The waiters of one session, by queue key (a session has at most one entry per queue).
#[derive(Debug, Default)]
pub(crate) struct Wakes {
    waiting: Mutex<HashMap<String, (u64, watch::Sender<u64>)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A waiter's registration: the tokens granted on its queue; removed when dropped.
pub(crate) struct WakeSlot {
    wakes: Arc<Wakes>,
    queue: String,
    id: u64,
    granted: watch::Receiver<u64>,
}

impl Wakes {
    /// Registers the waiter of `queue`.
    pub(crate) fn register(self: &Arc<Self>, queue: &str) -> WakeSlot {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, granted) = watch::channel(0);
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(queue.to_owned(), (id, sender));
        WakeSlot { wakes: self.clone(), queue: queue.to_owned(), id, granted }
    }

    /// Hands a message of the wake channel to its waiter; messages of nobody's queue are dropped.
    pub(crate) fn deliver(&self, message: &[u8]) {
        let Some((token, queue)) = parse(message) else {
            tracing::debug!(message = %String::from_utf8_lossy(message), "unexpected message on a wake channel");
            return;
        };
        if let Some((_, sender)) = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).get(queue) {
            sender.send_replace(token);
        }
    }
}

/// `g <token> <queue key>`.
fn parse(message: &[u8]) -> Option<(u64, &str)> {
    let text = std::str::from_utf8(message).ok()?.strip_prefix("g ")?;
    let (token, queue) = text.split_once(' ')?;
    Some((token.parse().ok()?, queue))
}

impl WakeSlot {
    /// Waits until the entry with `token` is granted.
    ///
    /// # Cancel safety
    /// Cancel safe: a grant heard stays for the next call.
    pub(crate) async fn granted(&mut self, token: u64) {
        let _ = self.granted.wait_for(|granted| *granted == token).await;
        // The sender lives as long as the registration, which this slot keeps.
    }
}

impl Drop for WakeSlot {
    fn drop(&mut self) {
        let mut waiting = self.wakes.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.get(&self.queue).is_some_and(|(id, _)| *id == self.id) {
            waiting.remove(&self.queue);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_grant_reaches_the_waiter_of_its_queue_even_if_it_came_first() {
        let wakes = Arc::new(Wakes::default());
        let mut slot = wakes.register("p:q:lock:a");
        let other = wakes.register("p:q:lock:b");
        wakes.deliver(b"g 7 p:q:lock:a");
        wakes.deliver(b"nonsense");
        tokio::time::timeout(std::time::Duration::from_secs(1), slot.granted(7)).await.expect("granted");
        assert_eq!(*other.granted.borrow(), 0, "another queue's waiter heard nothing");
        drop(slot);
        assert!(!wakes.waiting.lock().unwrap().contains_key("p:q:lock:a"));
    }
}
