//! The registry of a session's live holds, so that one session event (expiry, silence) reaches
//! the loss signal of every lock the session holds.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{backend::LossSignal, FencingToken, LockName, LossReason};

/// The live holds of one session.
///
/// ```
/// use distlock_core::{FencingToken, LockName, LossReason, backend::{HoldRegistry, LossSignal}};
///
/// let holds = HoldRegistry::default();
/// let signal = LossSignal::new(LockName::new("a")?, FencingToken::new(1));
/// let id = holds.register(signal.clone());
/// assert_eq!(holds.len(), 1);
/// holds.fire_all(LossReason::SessionExpired);
/// assert!(signal.is_fired());
/// assert_eq!(holds.len(), 0);
/// holds.remove(id); // removing twice is harmless
/// # Ok::<(), distlock_core::LockError>(())
/// ```
#[derive(Debug, Default)]
pub struct HoldRegistry {
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    holds: HashMap<u64, LossSignal>,
}

impl HoldRegistry {
    /// Adds a hold; returns the id to remove it with when it is released.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, backend::{HoldRegistry, LossSignal}};
    /// let holds = HoldRegistry::default();
    /// let id = holds.register(LossSignal::new(LockName::new("a")?, FencingToken::new(1)));
    /// holds.remove(id);
    /// assert_eq!(holds.len(), 0);
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn register(&self, signal: LossSignal) -> u64 {
        let mut reg = self.lock();
        reg.next_id += 1;
        let id = reg.next_id;
        reg.holds.insert(id, signal);
        id
    }

    /// Removes a released hold.
    ///
    /// ```
    /// distlock_core::backend::HoldRegistry::default().remove(7); // unknown ids are ignored
    /// ```
    pub fn remove(&self, id: u64) {
        self.lock().holds.remove(&id);
    }

    /// Fires the loss signal of every registered hold and forgets them.
    ///
    /// ```
    /// use distlock_core::{LossReason, backend::HoldRegistry};
    /// HoldRegistry::default().fire_all(LossReason::ServerSilent);
    /// ```
    pub fn fire_all(&self, reason: LossReason) {
        let holds: Vec<LossSignal> = self.lock().holds.drain().map(|(_, s)| s).collect();
        for signal in holds {
            signal.fire(reason);
        }
    }

    /// Fires the loss signal of the hold of `name` with `token`, if registered, and forgets it
    /// (a backend that learns of one hold's loss by its name and token). Whether one was.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, LossReason, backend::{HoldRegistry, LossSignal}};
    /// let holds = HoldRegistry::default();
    /// let name = LockName::new("a")?;
    /// let signal = LossSignal::new(name.clone(), FencingToken::new(3));
    /// holds.register(signal.clone());
    /// assert!(!holds.fire(&name, FencingToken::new(2), LossReason::EntryDeleted)); // another hold's
    /// assert!(holds.fire(&name, FencingToken::new(3), LossReason::EntryDeleted));
    /// assert_eq!(signal.reason(), Some(LossReason::EntryDeleted));
    /// assert!(holds.is_empty());
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn fire(&self, name: &LockName, token: FencingToken, reason: LossReason) -> bool {
        let signal = {
            let mut reg = self.lock();
            let id = reg.holds.iter().find(|(_, s)| s.name() == name && s.token() == token).map(|(id, _)| *id);
            id.and_then(|id| reg.holds.remove(&id))
        };
        signal.map(|signal| signal.fire(reason)).is_some()
    }

    /// How many holds are registered.
    ///
    /// ```
    /// assert_eq!(distlock_core::backend::HoldRegistry::default().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.lock().holds.len()
    }

    /// Whether no hold is registered.
    ///
    /// ```
    /// assert!(distlock_core::backend::HoldRegistry::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the map half-updated, so poison is harmless.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
