//! The client-side lease clock: when could the server have ended our session, at the earliest?
//!
//! A server renews a session when it *receives* a keepalive, which is after the client *sent* it.
//! So `send time of the last acknowledged keepalive + TTL` is a moment the server's expiry cannot
//! come before. The clock subtracts a margin for clock-rate drift and scheduling delay, and a
//! backend fires its holds' loss signals when that deadline passes without a newer acknowledgement.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Tracks the last acknowledged keepalive and the deadline after which held locks are in doubt.
///
/// ```
/// use std::time::Duration;
/// use distlock_core::backend::LeaseClock;
/// use tokio::time::Instant;
///
/// let clock = LeaseClock::new(Duration::from_secs(10));
/// let sent = Instant::now();
/// clock.acknowledged(sent);
/// assert_eq!(clock.deadline(), sent + Duration::from_secs(10) - clock.margin());
/// ```
#[derive(Debug)]
pub struct LeaseClock {
    ttl: Duration,
    margin: Duration,
    last_ack_sent: watch::Sender<Instant>,
}

impl LeaseClock {
    /// A clock for a session with `ttl`, acknowledged as of now. The margin is a fifth of the
    /// TTL, at most 2 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = distlock_core::backend::LeaseClock::new(Duration::from_secs(1));
    /// assert_eq!(clock.margin(), Duration::from_millis(200));
    /// ```
    pub fn new(ttl: Duration) -> Self {
        let margin = (ttl / 5).min(Duration::from_secs(2));
        LeaseClock { ttl, margin, last_ack_sent: watch::Sender::new(Instant::now()) }
    }

    /// The session TTL.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(distlock_core::backend::LeaseClock::new(Duration::from_secs(3)).ttl(), Duration::from_secs(3));
    /// ```
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long before the earliest possible server-side expiry the deadline falls.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(distlock_core::backend::LeaseClock::new(Duration::from_secs(60)).margin(), Duration::from_secs(2));
    /// ```
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// Records that the keepalive (or any request that renews the session) sent at `sent_at` was
    /// acknowledged. Older acknowledgements than the newest one are ignored.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// let clock = distlock_core::backend::LeaseClock::new(Duration::from_secs(5));
    /// let now = Instant::now();
    /// clock.acknowledged(now);
    /// clock.acknowledged(now - Duration::from_secs(1)); // ignored: older
    /// assert_eq!(clock.deadline(), now + clock.ttl() - clock.margin());
    /// ```
    pub fn acknowledged(&self, sent_at: Instant) {
        self.last_ack_sent.send_if_modified(|last| {
            if sent_at > *last {
                *last = sent_at;
                true
            } else {
                false
            }
        });
    }

    /// The send time of the newest acknowledged keepalive.
    ///
    /// ```
    /// let clock = distlock_core::backend::LeaseClock::new(std::time::Duration::from_secs(5));
    /// assert!(clock.last_acknowledged() <= tokio::time::Instant::now());
    /// ```
    pub fn last_acknowledged(&self) -> Instant {
        *self.last_ack_sent.borrow()
    }

    /// The moment after which the server may have expired the session.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = distlock_core::backend::LeaseClock::new(Duration::from_secs(5));
    /// assert!(clock.deadline() > tokio::time::Instant::now());
    /// ```
    pub fn deadline(&self) -> Instant {
        *self.last_ack_sent.borrow() + self.ttl - self.margin
    }

    /// Waits until the deadline passes with no newer acknowledgement.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// let clock = distlock_core::backend::LeaseClock::new(Duration::from_millis(50));
    /// clock.silent().await; // no acknowledgements: resolves after 40 ms
    /// # }
    /// ```
    pub async fn silent(&self) {
        let mut acks = self.last_ack_sent.subscribe();
        loop {
            let deadline = self.deadline();
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                // The sender lives in `self`; an error cannot happen while we borrow it.
                _ = acks.changed() => {}
            }
        }
    }

    /// Waits until an acknowledgement moves the deadline past `deadline`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// let clock = distlock_core::backend::LeaseClock::new(Duration::from_secs(5));
    /// let old = clock.deadline();
    /// clock.acknowledged(tokio::time::Instant::now() + Duration::from_millis(1));
    /// clock.renewed_past(old).await;
    /// # }
    /// ```
    pub async fn renewed_past(&self, deadline: Instant) {
        let mut acks = self.last_ack_sent.subscribe();
        let (ttl, margin) = (self.ttl, self.margin);
        // The sender lives in `self`; an error cannot happen while we borrow it.
        let _ = acks.wait_for(|last| *last + ttl - margin > deadline).await;
    }
}
