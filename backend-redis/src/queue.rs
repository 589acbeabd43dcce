//! The queue every recipe shares: a session's entry in `<prefix>:q:<kind>:<name>`, queued and
//! checked by `lua/queue.lua`, which also applies the recipe's grant rule on the server (the
//! rules of [`distlock_core::backend::GrantRule`], restated in Lua). This module queues, waits
//! and leaves; [`crate::hold`] turns a granted place into a hold.
//!
//! Waiting costs no polling of the queue: the script that admits an entry (a release, a
//! cancelled wait, a queuing that removed a dead entry) publishes the grant on the entry's
//! session's wake channel, so a hand-off is the release's one request and one message. What
//! no script can see is a session dying: each waiter checks again (one script) when the
//! session of an entry it waits behind could expire at the earliest, as the script read its
//! PTTL (the first waiter: any holder's; later ones: their predecessor's). A new connection
//! (messages may have been lost) makes every waiter check again too.

use std::sync::Arc;
use std::time::Duration;

use distlock_core::backend::{EntryRequest, Recipe};
use distlock_core::{FencingToken, LockError, LockName, QueueEntry};

use crate::layout;
use crate::scripts::{self, Queued};
use crate::session::RedisSession;

/// How much later than the earliest expiry a waiter checks again: the server's expiry of a key
/// runs on its own clock, and a check a moment too early costs one more.
const RECHECK_SLACK: Duration = Duration::from_millis(5);

/// A session's place in one queue.
#[derive(Debug)]
pub(crate) struct Place {
    pub(crate) session: Arc<RedisSession>,
    pub(crate) name: LockName,
    pub(crate) kind: &'static str,
    pub(crate) queue: String,
    pub(crate) token: u64,
    pub(crate) recipe: Recipe,
}

impl Place {
    /// Removes this place's entry (fenced by its token; `0`: whichever the session has); with
    /// `replicas=N`, done once N replicas have the removal (and the grants it made).
    pub(crate) async fn leave(
        session: &RedisSession,
        kind: &str,
        name: &LockName,
        token: u64,
        op: &str,
    ) -> Result<(), LockError> {
        let args = crate::args![kind, name.as_str(), session.id, token.to_string()];
        let result = session.script::<i64>(op, &scripts::LEAVE, args).await;
        match result {
            Ok(_) => session.replicated(op).await,
            // The session's end removed the entry (it is dead to everyone).
            Err(LockError::SessionExpired { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Removes a waiter's entry when its acquire is cancelled or fails, in the background, retried
/// until confirmed or the session ends. Until it is done, the session does not queue there again.
struct EntryCleanup {
    session: Arc<RedisSession>,
    name: LockName,
    kind: &'static str,
    queue: String,
    /// The entry's token, `0` while unknown (a queuing whose reply was lost).
    token: u64,
    armed: bool,
}

impl Drop for EntryCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (session, name, kind, token) = (self.session.clone(), self.name.clone(), self.kind, self.token);
        self.session.cleanups.start(&self.queue).retry_until_done(format!("{} ({token})", self.queue), move || {
            let (session, name) = (session.clone(), name.clone());
            async move { Place::leave(&session, kind, &name, token, "remove a cancelled waiter's entry").await }
        });
    }
}

/// An entry in the queue, not yet known to hold. Dropped unconsumed, it is removed.
pub(crate) struct Waiting {
    place: Place,
    recheck: Duration,
    slot: crate::wakes::WakeSlot,
    cleanup: EntryCleanup,
}

/// What queuing came to.
pub(crate) enum Enqueued {
    Granted(Place),
    Waiting(Waiting),
    /// A try that was not granted: nothing is left on the server.
    Busy,
}

impl Enqueued {
    /// The entry as `inspect` would list it, `None` after a try that missed.
    pub(crate) fn entry(&self) -> Option<QueueEntry> {
        let place = match self {
            Enqueued::Granted(place) => place,
            Enqueued::Waiting(waiting) => &waiting.place,
            Enqueued::Busy => return None,
        };
        Some(QueueEntry {
            owner: place.session.id.clone(),
            token: FencingToken::new(place.token),
            since: None,
            kind: place.recipe.entry_kind(),
        })
    }
}

/// Runs `queue.lua` for the session's entry in `kind`'s queue of `name` (`mode`: `queue`, `try`,
/// `check`).
async fn run_queue_script(
    session: &RedisSession,
    kind: &str,
    name: &LockName,
    mode: &str,
    entry: &EntryRequest,
) -> Result<Queued, LockError> {
    let op = if mode == "check" { "check the queue" } else { "queue for the lock" };
    let args = crate::args![kind, name.as_str(), session.id, mode, layout::recipe_char(entry.recipe), entry.value];
    let queued = session.script::<Queued>(op, &scripts::QUEUE, args).await?;
    match queued {
        Queued::Expired => {
            session.life.expire();
            Err(LockError::SessionExpired { during: format!("queuing for {:?}", name.as_str()) })
        }
        Queued::Permits(queued) => Err(LockError::PermitsMismatch {
            name: name.to_string(),
            queued,
            asked: match entry.recipe {
                Recipe::Permit(asked) => asked.get(),
                _ => 0,
            },
        }),
        other => Ok(other),
    }
}

/// Queues `session` for `name` with `entry` (`try_only`: only if granted at once).
pub(crate) async fn enqueue(
    session: Arc<RedisSession>,
    name: &LockName,
    entry: &EntryRequest,
    try_only: bool,
) -> Result<Enqueued, LockError> {
    let kind = layout::queue_kind(entry.recipe);
    let queue = layout::queue_key(&session.config.prefix, kind, name.as_str());
    session.cleanups.wait(&queue, &session.life).await;
    let slot = session.wakes.register(&queue);
    let mut cleanup = EntryCleanup {
        session: session.clone(),
        name: name.clone(),
        kind,
        queue: queue.clone(),
        token: 0,
        armed: true,
    };
    let mode = if try_only { "try" } else { "queue" };
    let queued = match run_queue_script(&session, kind, name, mode, entry).await {
        Ok(queued) => queued,
        // Whatever the script did went with the session, or was refused before it wrote.
        Err(error @ (LockError::SessionExpired { .. } | LockError::PermitsMismatch { .. })) => {
            cleanup.armed = false;
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    let place = |token| Place {
        session: session.clone(),
        name: name.clone(),
        kind,
        queue: queue.clone(),
        token,
        recipe: entry.recipe,
    };
    match queued {
        Queued::Granted(token) => {
            // Unless the replicas asked for acknowledge the grant, the entry leaves again.
            cleanup.token = token;
            session.replicated("have the grant acknowledged by the replicas").await?;
            cleanup.armed = false;
            Ok(Enqueued::Granted(place(token)))
        }
        Queued::Busy => {
            cleanup.armed = false;
            Ok(Enqueued::Busy)
        }
        Queued::Waiting { token, recheck_ms } => {
            cleanup.token = token;
            let recheck = Duration::from_millis(recheck_ms);
            Ok(Enqueued::Waiting(Waiting { place: place(token), recheck, slot, cleanup }))
        }
        Queued::Gone | Queued::Expired | Queued::Permits(_) => Err(LockError::Backend {
            backend: "redis",
            op: format!("queue for {:?}", name.as_str()),
            retryable: true,
            source: "the queuing script answered as if checking; call lock again".into(),
        }),
    }
}

impl Waiting {
    /// Waits until the entry is granted: by a grant on the wake channel, or by a check when an
    /// entry ahead could have died, or after a new connection.
    pub(crate) async fn until_granted(mut self) -> Result<Place, LockError> {
        let session = self.place.session.clone();
        let mut epoch = session.link.epoch();
        epoch.borrow_and_update();
        let entry = EntryRequest { recipe: self.place.recipe, value: Vec::new() };
        loop {
            let checked = tokio::select! {
                biased;
                _ = session.life.ended() => {
                    return Err(LockError::SessionExpired { during: format!("waiting for {:?}", self.place.name.as_str()) });
                }
                _ = self.slot.granted(self.place.token) => None,
                _ = tokio::time::sleep(self.recheck + RECHECK_SLACK) => Some("an entry ahead may have died"),
                _ = epoch.changed() => Some("a new connection"),
            };
            let Some(why) = checked else { break };
            tracing::debug!(lock = %self.place.name, token = self.place.token, why, "checking the queue again");
            match run_queue_script(&session, self.place.kind, &self.place.name, "check", &entry).await? {
                Queued::Granted(_) => break,
                Queued::Waiting { recheck_ms, .. } => self.recheck = Duration::from_millis(recheck_ms),
                _ => {
                    self.cleanup.armed = false;
                    return Err(LockError::Backend {
                        backend: "redis",
                        op: format!("waiting for {:?}", self.place.name.as_str()),
                        retryable: true,
                        source: "our queue entry was deleted while waiting (by an operator); call lock again".into(),
                    });
                }
            }
        }
        if session.life.is_ended() {
            return Err(LockError::SessionExpired { during: format!("waiting for {:?}", self.place.name.as_str()) });
        }
        // Unless the replicas asked for acknowledge the grant, the entry leaves again.
        session.replicated("have the grant acknowledged by the replicas").await?;
        tracing::info!(lock = %self.place.name, token = self.place.token, "hand-off: granted");
        self.cleanup.armed = false;
        Ok(self.place)
    }
}
