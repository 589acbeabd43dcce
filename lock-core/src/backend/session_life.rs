//! `SessionLife`: what every backend's session tracks about itself — its state, its lease clock,
//! the holds that die with it, and whether it has ended — and the transitions between them, so
//! that each backend only has to report what it hears from its server.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::sessions::KeepaliveAge;
use crate::{
    backend::{HoldRegistry, LeaseClock, SessionStateCell},
    LossReason, SessionState,
};

/// The life of one server session as the client knows it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock_core::LockError> {
/// use std::time::Duration;
/// use distlock_core::{FencingToken, LockName, LossReason, SessionState, backend::{LossSignal, SessionLife}};
///
/// let life = SessionLife::new("example", Duration::from_secs(10));
/// let hold = LossSignal::new(LockName::new("a")?, FencingToken::new(1));
/// life.holds().register(hold.clone());
/// life.expire(); // the server said the session is gone
/// assert_eq!(hold.reason(), Some(LossReason::SessionExpired));
/// assert_eq!(life.state(), SessionState::Expired);
/// assert!(life.is_ended());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SessionLife {
    state: SessionStateCell,
    clock: LeaseClock,
    holds: HoldRegistry,
    ended: CancellationToken,
    /// The session's report of its keepalive age to metrics.
    age: KeepaliveAge,
}

impl SessionLife {
    /// A new, connected session with `ttl`, acknowledged as of now.
    ///
    /// ```
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// assert!(life.state().is_connected());
    /// ```
    pub fn new(backend: &'static str, ttl: Duration) -> Self {
        SessionLife {
            state: SessionStateCell::new(backend),
            clock: LeaseClock::new(ttl),
            holds: HoldRegistry::default(),
            ended: CancellationToken::new(),
            age: KeepaliveAge::new(backend),
        }
    }

    /// The backend's name, as given to [`SessionLife::new`].
    ///
    /// ```
    /// assert_eq!(distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1)).backend(), "mem");
    /// ```
    pub fn backend(&self) -> &'static str {
        self.state.backend()
    }

    /// Reports the time since the last acknowledged keepalive, over the TTL, to metrics; a
    /// session past its deadline has given up (its holds are lost) and leaves the report.
    fn report_age(&self) {
        let now = Instant::now();
        if self.clock.deadline() <= now {
            self.age.report(None);
            return;
        }
        let age = now.saturating_duration_since(self.clock.last_acknowledged());
        self.age.report(Some(age.as_secs_f64() / self.clock.ttl().as_secs_f64().max(f64::MIN_POSITIVE)));
    }

    /// The session's state.
    ///
    /// ```
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// assert_eq!(life.state(), distlock_core::SessionState::Connected);
    /// ```
    pub fn state(&self) -> SessionState {
        self.state.get()
    }

    /// The lease clock.
    ///
    /// ```
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// assert!(life.clock().deadline() > tokio::time::Instant::now());
    /// ```
    pub fn clock(&self) -> &LeaseClock {
        &self.clock
    }

    /// The holds that are lost when the session ends or goes silent.
    ///
    /// ```
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// assert!(life.holds().is_empty());
    /// ```
    pub fn holds(&self) -> &HoldRegistry {
        &self.holds
    }

    /// The server acknowledged a renewal sent at `sent_at`: the session is connected.
    ///
    /// ```
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// life.renewed(tokio::time::Instant::now());
    /// ```
    pub fn renewed(&self, sent_at: Instant) {
        if self.is_ended() {
            return;
        }
        self.clock.acknowledged(sent_at);
        self.state.set(SessionState::Connected);
        self.report_age();
    }

    /// The server has been silent past the lease clock's deadline: every hold is lost (the server
    /// may already have handed the locks on) and the session is suspended.
    ///
    /// ```
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// life.silent_too_long();
    /// assert_eq!(life.state(), distlock_core::SessionState::Suspended);
    /// ```
    pub fn silent_too_long(&self) {
        self.state.set(SessionState::Suspended);
        self.report_age();
        self.holds.fire_all(LossReason::ServerSilent);
    }

    /// The client cannot reach the server right now; holds stay until the deadline.
    ///
    /// ```
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// life.suspended();
    /// assert_eq!(life.state(), distlock_core::SessionState::Suspended);
    /// ```
    pub fn suspended(&self) {
        self.state.set(SessionState::Suspended);
        self.report_age();
    }

    /// The session is over on the server: every hold is lost, waits end, the state is final.
    ///
    /// ```
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// life.expire();
    /// assert!(life.is_ended());
    /// let closed = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// closed.close();
    /// closed.expire(); // after close, the session stays closed
    /// assert_eq!(closed.state(), distlock_core::SessionState::Closed);
    /// ```
    pub fn expire(&self) {
        // A session the client closed (or that already expired) has fired its holds: a request
        // failing afterwards with "expired" must not change why they were lost.
        if self.is_ended() {
            return;
        }
        // Ended first: whoever learns of the expiry (from the state or a hold's loss) and locks
        // again must find this session ended, or the new lock would be sent on the dead session.
        self.ended.cancel();
        self.state.set(SessionState::Expired);
        self.age.report(None);
        self.holds.fire_all(LossReason::SessionExpired);
    }

    /// The client is closing the session: every hold is lost (fired before the server is told,
    /// so no holder writes after the server may hand its locks on), waits end, the state is final.
    /// The backend then ends the session on the server.
    ///
    /// ```
    /// use distlock_core::{FencingToken, LockName, LossReason, SessionState, backend::{LossSignal, SessionLife}};
    /// let life = SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// let hold = LossSignal::new(LockName::new("a")?, FencingToken::new(1));
    /// life.holds().register(hold.clone());
    /// life.close();
    /// assert_eq!(hold.reason(), Some(LossReason::ClientClosed));
    /// assert_eq!(life.state(), SessionState::Closed);
    /// assert!(life.is_ended());
    /// # Ok::<(), distlock_core::LockError>(())
    /// ```
    pub fn close(&self) {
        self.ended.cancel();
        self.state.set(SessionState::Closed);
        self.age.report(None);
        self.holds.fire_all(LossReason::ClientClosed);
    }

    /// Whether the session is over.
    ///
    /// ```
    /// assert!(!distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1)).is_ended());
    /// ```
    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Whether the server surely still has the session: it has not ended, and the lease clock's
    /// deadline (last acknowledged renewal's send time + TTL − margin) is still ahead. Recipes
    /// use it before granting without a read that would otherwise prove the session alive.
    ///
    /// ```
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(10));
    /// assert!(life.surely_alive());
    /// life.expire();
    /// assert!(!life.surely_alive());
    /// ```
    pub fn surely_alive(&self) -> bool {
        !self.is_ended() && self.clock.deadline() > Instant::now()
    }

    /// Resolves when the session is over.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let life = distlock_core::backend::SessionLife::new("mem", std::time::Duration::from_secs(1));
    /// life.expire();
    /// life.ended().await;
    /// # }
    /// ```
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }

    /// Watches the lease clock until the session ends: whenever the deadline passes with no
    /// renewal, calls [`SessionLife::silent_too_long`] (once per silence). Backends run this
    /// beside their keepalive loop.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops watching.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// let life = distlock_core::backend::SessionLife::new("mem", Duration::from_millis(50));
    /// let watcher = life.watch_silence();
    /// tokio::time::timeout(Duration::from_millis(100), watcher).await.ok();
    /// assert_eq!(life.state(), distlock_core::SessionState::Suspended);
    /// # }
    /// ```
    pub async fn watch_silence(&self) {
        loop {
            tokio::select! {
                _ = self.ended.cancelled() => return,
                _ = self.clock.silent() => self.silent_too_long(),
            }
            // Wait for a renewal (or the end) before watching for the next silence.
            tokio::select! {
                _ = self.ended.cancelled() => return,
                _ = self.clock.renewed_past(self.clock.deadline()) => {}
            }
        }
    }
}

impl Drop for SessionLife {
    fn drop(&mut self) {
        // A session dropped while live leaves the metrics' count of live sessions.
        if self.state.recorded() {
            crate::metrics::sessions::dropped(self.state.backend(), self.state.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use super::*;
    use crate::{backend::LossSignal, FencingToken, LockName};

    /// At each event of the loss module (a hold announcing its loss) and the state cell (a
    /// state change), records whether the session already says it has ended.
    struct EndedAtEachAnnouncement {
        life: Arc<SessionLife>,
        seen: Arc<Mutex<Vec<(&'static str, bool)>>>,
    }

    impl<S: tracing::Subscriber> Layer<S> for EndedAtEachAnnouncement {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let target = event.metadata().target();
            if target.ends_with("::loss") || target.ends_with("::state_cell") {
                self.seen.lock().unwrap().push((target, self.life.is_ended()));
            }
        }
    }

    /// Whoever reacts to an expiry by locking again must get a new session: by the time the state
    /// says expired or a hold is lost, `is_ended` (what the session slot checks) is already true.
    #[test]
    fn an_expiry_is_announced_only_once_the_session_counts_as_ended() {
        let life = Arc::new(SessionLife::new("test", Duration::from_secs(10)));
        life.holds().register(LossSignal::new(LockName::new("a").unwrap(), FencingToken::new(1)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let layer = EndedAtEachAnnouncement { life: life.clone(), seen: seen.clone() };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || life.expire());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [("distlock_core::backend::state_cell", true), ("distlock_core::loss", true)],
            "(announcement, session ended at that moment)"
        );
    }
}
