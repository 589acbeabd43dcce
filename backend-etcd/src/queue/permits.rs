//! How a permit of a semaphore waits, under [`distlock_core::backend::GrantRule::Permits`].
//!
//! **By its mailbox** ([`crate::permit_mailbox`]): a releasing holder tells the waiter its
//! release admits ([`super::permit_hand_on`]), on a watch the session opened once. A grant then
//! costs the waiter no request at all.
//!
//! **By watches, as a fallback**: a holder whose lease expires tells nobody, nor does a hand-on
//! that failed. So the waiter first in line (N keys ahead, all holding: it read so, or a
//! release marked it `first`) that has heard nothing for [`patience`] watches the queue's
//! deletions itself: whichever holder goes, the one deletion admits it, with no read. Any other
//! waiter reads where it stands every [`backstop`] without news (a count of at most N+1 keys),
//! for the case where the first in line itself went without a word. A waiter whose mailbox is
//! refused or lost its history waits by watches only: the first in line as above, one further
//! back on its predecessor's key, which either goes or, once granted that way, marks itself (a
//! put of its own key, fenced by its create revision). A predecessor granted by its mailbox
//! does not mark itself, so a waiter by watches also reads where it stands after [`backstop`]
//! without news.
//!
//! A watch is opened "from now" (a watch from a past revision sits in etcd's unsynced group and
//! hears nothing for up to 100 ms), and a read after its creation covers what happened between
//! the last read and the watch: events at or before that read are in the read, later ones reach
//! the watch.

use std::num::NonZeroU32;
use std::time::Duration;

use distlock_core::backend::Recipe;
use distlock_core::LockError;
use etcd_client::{
    Compare, CompareOp, EventType, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
    WatchResponse,
};
use tokio::time::Instant;

use super::permit_hand_on::hand_on_after_grant;
use super::wait::read_place;
use super::{kvs, queue_keys, queue_range, Queued};
use crate::permit_mailbox::{Inbox, Watching};
use crate::place::Place;
use crate::watch::open_confirmed;
use crate::watch_hub::HubWatch;
use distlock_core::backend::Heard;

/// How long the waiter first in line waits for its grant by mailbox before it watches the
/// holders itself (a holder whose lease expires tells nobody): a tenth of the session TTL, from
/// 50 ms to 1 s, so that a dead holder's permit is back within about 1.1 TTL of its death.
/// Under load a grant comes within milliseconds; a long hold costs the first in line one watch
/// and one read.
fn patience(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// How long any other waiter waits without news before it reads where it stands, in case the
/// waiter first in line went (left, or its lease expired) without a word to the next: the
/// session TTL (at least 1 s), so that these reads cost a waiting session less than its
/// keepalives do.
fn backstop(ttl: Duration) -> Duration {
    ttl.max(Duration::from_secs(1))
}

/// How a wait by mailbox ended.
enum ByMailbox {
    /// A release marked us granted.
    Granted,
    /// A read found us among the first N: admitted without a mark.
    Admitted,
    /// Wait by watches instead: first in line without news for [`patience`], or the mailbox
    /// lost what it may have been told.
    Watch,
}

impl Queued {
    /// Waits until the permit is granted (see the module comment).
    pub(crate) async fn wait_for_permit(mut self) -> Result<Place, LockError> {
        if self.is_first() {
            self.cleanup.armed = false;
            return Ok(self.place);
        }
        let Recipe::Permit(permits) = self.place.recipe else { return Err(not_a_permit(&self.place)) };
        let session = self.place.session.clone();
        let (mut inbox, watching) = session.mailbox.register(&session, self.place.revision).await;
        let by_mailbox = match watching {
            Watching::Not => ByMailbox::Watch,
            Watching::Already => self.wait_by_mailbox(&mut inbox, permits).await?,
            Watching::Opened => {
                // A mark put before the watch was confirmed went unheard: read once.
                self.permits_ahead = None;
                self.wait_by_mailbox(&mut inbox, permits).await?
            }
        };
        drop(inbox);
        match by_mailbox {
            ByMailbox::Granted => {}
            ByMailbox::Admitted => hand_on_after_grant(&session, &self.place.queue_prefix, permits).await,
            ByMailbox::Watch => {
                self.wait_by_watches(permits).await?;
                match watching {
                    Watching::Not => self.mark_granted(),
                    _ => hand_on_after_grant(&session, &self.place.queue_prefix, permits).await,
                }
            }
        }
        tracing::info!(lock = %self.place.name, token = self.place.revision, "hand-off: a permit granted");
        self.cleanup.armed = false;
        Ok(self.place)
    }

    /// Waits for a mark in the mailbox, reading where we stand only when nothing was heard for
    /// [`backstop`], and giving up on the mailbox when first in line for [`patience`].
    async fn wait_by_mailbox(&mut self, inbox: &mut Inbox, permits: NonZeroU32) -> Result<ByMailbox, LockError> {
        let place = &self.place;
        let session = &place.session;
        let n = permits.get() as usize;
        let mut ahead = self.permits_ahead.take();
        let mut first_in_line_since = None;
        let (patience, backstop) = (patience(session.config.ttl), backstop(session.config.ttl));
        let mut backstop_at = Instant::now() + backstop;
        loop {
            match inbox.last() {
                Heard::Granted => {
                    if !session.life.surely_alive() {
                        // Our key may have gone with the lease: the read fails if it did.
                        count_ahead(place, permits).await?;
                    }
                    return Ok(ByMailbox::Granted);
                }
                Heard::Missed => return Ok(ByMailbox::Watch),
                Heard::First => {
                    first_in_line_since.get_or_insert_with(Instant::now);
                }
                Heard::Nothing => {}
            }
            let standing = match ahead {
                Some(ahead) => ahead,
                None => {
                    backstop_at = Instant::now() + backstop;
                    count_ahead(place, permits).await?
                }
            };
            ahead = Some(standing);
            if standing < n {
                return Ok(ByMailbox::Admitted);
            }
            if standing == n {
                first_in_line_since.get_or_insert_with(Instant::now);
            }
            tracing::debug!(lock = %place.name, token = place.revision, ahead = standing, first_in_line = first_in_line_since.is_some(), "waiting for a permit by mailbox");
            let wake_at = first_in_line_since.map_or(backstop_at, |since| since + patience);
            tokio::select! {
                biased;
                _ = session.life.ended() => {
                    let during = format!("waiting for a permit of {:?}", place.name.as_str());
                    return Err(LockError::SessionExpired { during });
                }
                _ = inbox.next() => {}
                () = tokio::time::sleep_until(wake_at) => {
                    if first_in_line_since.is_some() {
                        return Ok(ByMailbox::Watch);
                    }
                    ahead = None;
                }
            }
        }
    }

    /// Waits by watches alone (see the module comment) until the permit is granted.
    async fn wait_by_watches(&mut self, permits: NonZeroU32) -> Result<(), LockError> {
        let place = &self.place;
        let session = &place.session;
        let during = || format!("waiting for a permit of {:?}", place.name.as_str());
        let permits = permits.get() as usize;
        // The last read, while it still tells where we stand; and what to watch before reading
        // again, when an event made it likely (a predecessor that went or was granted: we are
        // most likely the first waiter now).
        let mut standing: Option<Standing> = None;
        let mut likely: Option<Wanted> = None;
        loop {
            let wanted = match (&standing, likely.take()) {
                (Some(now), _) => match Wanted::of(now, permits) {
                    Some(wanted) => wanted,
                    None => return Ok(()),
                },
                (None, Some(likely)) => likely,
                (None, None) => {
                    standing = Some(read_standing(place).await?);
                    continue;
                }
            };
            // The watch first, then (unless the last read came after its creation) a read: no
            // event falls between them.
            let Some((mut watch, created)) = open_watch(place, &wanted).await else {
                // Refused or broken: read again after a pause (a read fails once the session
                // has ended).
                tokio::time::sleep(WATCH_RETRY_PAUSE).await;
                standing = None;
                continue;
            };
            let now = match standing.take() {
                Some(now) if created <= now.at => now,
                _ => read_standing(place).await?,
            };
            if Wanted::of(&now, permits).as_ref() != Some(&wanted) {
                standing = Some(now);
                continue;
            }
            tracing::debug!(lock = %place.name, token = place.revision, at = now.at, ahead = now.ahead, ?wanted, "waiting for a permit by watches");
            let heard = tokio::select! {
                biased;
                _ = session.life.ended() => return Err(LockError::SessionExpired { during: during() }),
                heard = next_event(&mut watch, &wanted, place.revision, now.at) => heard,
                // A predecessor granted by its mailbox does not mark its key: a waiter behind it
                // that waits by watches learns of its grant by reading.
                () = tokio::time::sleep(backstop(session.config.ttl)) => false,
            };
            // The first waiter, on a holder's deletion, holds, if our own key surely lives (our
            // lease does). A waiter further back, on its predecessor's event, most likely is the
            // first waiter now. Anything else: read again.
            match wanted {
                Wanted::HolderLeft if heard && session.life.surely_alive() => return Ok(()),
                Wanted::Predecessor(_) if heard => likely = Some(Wanted::HolderLeft),
                _ => {}
            }
        }
    }

    /// Puts our key again (same value, same lease) if it still has our create revision: a
    /// waiter behind us that waits by watches, watching our key, learns that we hold and that it
    /// may be the first waiter. In the background: the holder need not wait for it, and if the
    /// holder releases first, the Txn changes nothing and the waiter behind hears the deletion
    /// instead.
    fn mark_granted(&self) {
        let place = &self.place;
        let (session, key, revision) = (place.session.clone(), place.key.clone(), place.revision);
        let txn = Txn::new().when([Compare::create_revision(key.as_str(), CompareOp::Equal, revision)]).and_then([
            TxnOp::put(key.as_str(), place.recipe.value(), Some(PutOptions::new().with_lease(session.lease))),
        ]);
        tokio::spawn(async move {
            if let Err(error) = session.txn("mark our permit granted", txn).await {
                tracing::debug!(%key, %error, "could not mark the permit granted; the waiter behind hears its release");
            }
        });
    }
}

/// How many keys of the queue a permit's queuing Txn reads besides counting them: enough to
/// hold one other than our own, whose number of permits must be ours.
const QUEUING_SAMPLE: i64 = 2;

/// What a permit's queuing Txn reads after putting its key: how many keys the queue holds (all
/// but ours older than ours, our key being the newest; a count from etcd's index, without the
/// sort by create revision that reads every key) and [`QUEUING_SAMPLE`] of them in key order,
/// whose number of permits must be ours (clients that disagree meet this way: the later one's
/// read holds the earlier one's key, or another with the same number).
pub(super) fn queue_reads(queue_prefix: &str) -> Vec<TxnOp> {
    vec![
        TxnOp::get(queue_prefix, Some(queue_range().with_count_only())),
        TxnOp::get(queue_prefix, Some(queue_range().with_limit(QUEUING_SAMPLE))),
    ]
}

/// How many keys were ahead of ours by [`queue_reads`]' answers, checking the sampled keys'
/// number of permits.
pub(super) fn ahead_at_queuing(place: &Place, answers: &[TxnOpResponse]) -> Result<usize, LockError> {
    let count = match answers.first() {
        Some(TxnOpResponse::Get(get)) => get.count().max(1) as usize,
        _ => 1,
    };
    let others: Vec<&KeyValue> =
        answers.get(1).map(kvs).unwrap_or_default().iter().filter(|kv| kv.key() != place.key.as_bytes()).collect();
    place.check_permits(&others)?;
    Ok(count - 1)
}

/// How many keys are ahead of ours, counting to N+1 at most, if our key still has our revision.
async fn count_ahead(place: &Place, permits: NonZeroU32) -> Result<usize, LockError> {
    let limit = Some(i64::from(permits.get()) + 1);
    let (_, response) = read_place(place, "check place in the semaphore's queue", limit).await?;
    Ok(queue_keys(&place.queue_prefix, response.op_responses().first()).map_or(usize::MAX, |below| below.len()))
}

/// How long a waiter pauses before it reads again when its watch could not be opened.
const WATCH_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Where a permit stood in its queue: at revision `at`, with `ahead` keys below its own, the
/// nearest of them `predecessor`.
#[derive(Debug)]
struct Standing {
    at: i64,
    ahead: usize,
    predecessor: Option<String>,
}

impl Standing {
    /// A permit's standing from a read at `at` of every key `below` its own, nearest first;
    /// `None` for any other recipe.
    fn of_permit(place: &Place, at: i64, below: &[&KeyValue]) -> Option<Standing> {
        let Recipe::Permit(_) = place.recipe else { return None };
        let predecessor = below.first().and_then(|kv| kv.key_str().ok()).map(str::to_owned);
        Some(Standing { at, ahead: below.len(), predecessor })
    }
}

/// What a waiting permit watches.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// The first waiter: the deletion of any key older than ours (all of them hold).
    HolderLeft,
    /// A waiter further back: any event of its predecessor's key (a mark, a deletion).
    Predecessor(String),
}

impl Wanted {
    /// What to watch standing so; `None`: granted.
    fn of(standing: &Standing, permits: usize) -> Option<Wanted> {
        match standing.ahead {
            ahead if ahead < permits => None,
            ahead if ahead == permits => Some(Wanted::HolderLeft),
            _ => Some(standing.predecessor.clone().map_or(Wanted::HolderLeft, Wanted::Predecessor)),
        }
    }
}

/// Reads the keys below ours (all of them), checking that they carry our number of permits.
async fn read_standing(place: &Place) -> Result<Standing, LockError> {
    let (at, response) = read_place(place, "check place in the semaphore's queue", None).await?;
    let ops = response.op_responses();
    let below = queue_keys(&place.queue_prefix, ops.first()).unwrap_or_default();
    place.check_permits(&below)?;
    Standing::of_permit(place, at, &below).ok_or_else(|| not_a_permit(place))
}

/// Opens the watch `wanted` "from now" ([`open_confirmed`]): the watch and the revision it
/// starts after; `None` if it could not be opened (the caller reads again).
async fn open_watch(place: &Place, wanted: &Wanted) -> Option<(HubWatch, i64)> {
    match wanted {
        Wanted::HolderLeft => {
            let options = WatchOptions::new().with_prefix().with_prev_key().with_filters([WatchFilterType::NoPut]);
            open_confirmed(&place.session, &place.queue_prefix, options).await
        }
        Wanted::Predecessor(key) => open_confirmed(&place.session, key, WatchOptions::new()).await,
    }
}

/// Waits for an event of `wanted` after revision `after`: `true` if one came, `false` if the
/// watch broke or history was compacted (the caller reads again either way).
async fn next_event(watch: &mut HubWatch, wanted: &Wanted, own: i64, after: i64) -> bool {
    while let Some(response) = watch.message().await {
        if response.compact_revision() > 0 || response.canceled() {
            return false;
        }
        if matches(&response, wanted, own, after) {
            return true;
        }
    }
    false
}

/// Whether `response` carries an event of `wanted` after revision `after`: for the first
/// waiter, the deletion of a queue key older than ours (`own`); for a waiter further back, any
/// event of its predecessor.
fn matches(response: &WatchResponse, wanted: &Wanted, own: i64, after: i64) -> bool {
    response.events().iter().any(|event| {
        let at = event.kv().map(|kv| kv.mod_revision()).unwrap_or_default();
        at > after
            && match wanted {
                Wanted::Predecessor(_) => true,
                Wanted::HolderLeft => {
                    // Every key under the semaphore's prefix is in its queue (the `//` keeps the
                    // semaphores named below it out).
                    event.event_type() == EventType::Delete
                        && event.prev_kv().is_some_and(|kv| kv.create_revision() < own)
                }
            }
    })
}

/// A place not queued for a permit was sent to the permit's wait: a bug of ours.
fn not_a_permit(place: &Place) -> LockError {
    LockError::Backend {
        backend: "etcd",
        op: format!("wait for a permit of {:?}", place.name.as_str()),
        retryable: false,
        source: "the place was not queued for a permit: a distlock bug".into(),
    }
}
