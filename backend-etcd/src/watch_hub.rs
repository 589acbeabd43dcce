//! One watch stream per session, shared by all of the session's watches.
//!
//! etcd multiplexes watches on one gRPC stream by watch id, and so does etcd's Go client. Before
//! this module each watch (every waiter's, every held lock's) opened a stream of its own: a
//! session holding 10,000 locks kept 10,000 HTTP/2 streams and about 30 KB of client memory for
//! each. Here a session has one stream, created on first use. A reader task owns it: it sends
//! the create and cancel requests it is given and routes every response by its watch id to that
//! watch's channel. The ids are ours (`WatchCreateRequest.watch_id`), so a watch's route exists
//! before its create request leaves. When the stream breaks, every watch on it sees its channel
//! close ([`HubWatch::message`] returns `None`) and re-creates itself; the first to do so opens
//! the next stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use etcd_client::{Client, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{channel, unbounded_channel, Receiver, Sender, UnboundedReceiver, UnboundedSender};

/// What the reader task is asked to send on the stream.
enum Command {
    Watch(String, WatchOptions),
    Cancel(i64),
}

/// The stream currently in use: its generation and the way to its reader task.
#[derive(Clone)]
struct StreamLink {
    generation: u64,
    commands: UnboundedSender<Command>,
}

/// How many responses a watch may have waiting before it is dropped as broken. A watch being
/// awaited takes each at once; a watch kept for later (`WatchCache`) would otherwise collect
/// every deletion of its key for as long as it is kept. Dropped, it re-creates itself from the
/// revision it had covered when it is next used, like after a broken stream.
const QUEUED_RESPONSES: usize = 16;

/// A watch's route: the stream generation it was created on and its channel. Responses are
/// boxed: a channel allocates room for 32 of its items up front, and a held lock's watch sees
/// about two responses in its life.
struct Route {
    generation: u64,
    events: Sender<Box<WatchResponse>>,
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<i64, Route>>,
    stream: Mutex<Option<StreamLink>>,
    next_id: AtomicI64,
    next_generation: AtomicU64,
    /// Held while a stream is being opened, so that concurrent first watches open only one.
    opening: tokio::sync::Mutex<()>,
}

impl Shared {
    fn link(&self) -> Option<StreamLink> {
        self.stream.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn route(&self, id: i64, generation: u64, events: Sender<Box<WatchResponse>>) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Route { generation, events });
    }

    fn unroute(&self, id: i64) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Forgets stream `generation` and closes the channels of every watch on it.
    fn broken(&self, generation: u64) {
        let mut stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        if stream.as_ref().is_some_and(|s| s.generation == generation) {
            *stream = None;
        }
        drop(stream);
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, r| r.generation != generation);
    }
}

/// A session's watches, on one stream.
pub(crate) struct WatchHub {
    client: Client,
    shared: Arc<Shared>,
}

impl WatchHub {
    pub(crate) fn new(client: Client) -> Self {
        // Id 0 asks the server to pick one: ours start at 1.
        let shared = Shared { next_id: AtomicI64::new(1), ..Shared::default() };
        WatchHub { client, shared: Arc::new(shared) }
    }

    /// Sends a create request for a watch on `key` with `options` and returns the watch; its
    /// first message is the server's answer (created, or canceled with the reason). Fails only
    /// if no stream could be opened.
    ///
    /// Cancel safe: the watch is registered and its request sent only in the last, synchronous
    /// step, so a dropped call leaves nothing behind.
    pub(crate) async fn watch(&self, key: &str, options: WatchOptions) -> Result<HubWatch, etcd_client::Error> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let options = options.with_watch_id(id);
        let (sender, events) = channel(QUEUED_RESPONSES);
        loop {
            if let Some(link) = self.shared.link() {
                self.shared.route(id, link.generation, sender.clone());
                if link.commands.send(Command::Watch(key.to_owned(), options.clone())).is_ok() {
                    return Ok(HubWatch { id, generation: link.generation, events, shared: self.shared.clone() });
                }
                // Its reader task is gone: forget that stream and open another.
                self.shared.unroute(id);
                self.shared.broken(link.generation);
                continue;
            }
            let _opening = self.shared.opening.lock().await;
            if self.shared.link().is_some() {
                continue; // another watch opened one meanwhile
            }
            // Boxed: this rare path's future is large, and every waiting task would carry its
            // size in its own state otherwise.
            let stream = Box::pin(self.client.watch_client().watch(key, Some(options))).await?;
            let generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
            self.shared.route(id, generation, sender);
            let (commands, inbox) = unbounded_channel();
            *self.shared.stream.lock().unwrap_or_else(|p| p.into_inner()) = Some(StreamLink { generation, commands });
            tokio::spawn(read_stream(stream, inbox, Arc::downgrade(&self.shared), generation));
            return Ok(HubWatch { id, generation, events, shared: self.shared.clone() });
        }
    }
}

/// Owns one stream: sends what it is asked to, routes what arrives, and on a broken stream
/// closes the channels of all watches on it. Ends when the hub is gone.
async fn read_stream(
    mut stream: WatchStream,
    mut inbox: UnboundedReceiver<Command>,
    shared: Weak<Shared>,
    generation: u64,
) {
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => {
                    let Some(shared) = shared.upgrade() else { return };
                    let id = response.watch_id();
                    let overflowed = {
                        let mut routes = shared.routes.lock().unwrap_or_else(|p| p.into_inner());
                        let full = routes
                            .get(&id)
                            .is_some_and(|r| matches!(r.events.try_send(Box::new(response)), Err(TrySendError::Full(_))));
                        if full {
                            // Nobody takes its responses: drop it (its channel closes once drained).
                            routes.remove(&id);
                        }
                        full
                    };
                    if overflowed {
                        tracing::debug!(id, "etcd watch dropped: {QUEUED_RESPONSES} responses not taken");
                        if stream.cancel(id).await.is_err() {
                            break;
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            },
            command = inbox.recv() => {
                let sent = match command {
                    Some(Command::Watch(key, options)) => stream.watch(key, Some(options)).await,
                    Some(Command::Cancel(id)) => stream.cancel(id).await,
                    None => return, // the hub is gone; dropping the stream closes it
                };
                if sent.is_err() {
                    break;
                }
            }
        }
    }
    tracing::debug!(generation, "etcd watch stream broken; its watches re-create themselves");
    // Refuse new requests first: a watch that got its request in before this was routed before
    // it sent, so `broken` closes its channel; one that comes later finds the inbox closed and
    // opens the next stream. Either way no watch waits on a stream nobody reads.
    inbox.close();
    if let Some(shared) = shared.upgrade() {
        shared.broken(generation);
    }
}

/// One watch on the session's stream. Dropping it cancels the watch on the server.
pub(crate) struct HubWatch {
    id: i64,
    generation: u64,
    events: Receiver<Box<WatchResponse>>,
    shared: Arc<Shared>,
}

impl HubWatch {
    /// The next response for this watch; `None` once the stream it was on broke (or the watch
    /// was dropped for not taking its responses).
    ///
    /// Cancel safe: a response not yet taken stays queued.
    pub(crate) async fn message(&mut self) -> Option<WatchResponse> {
        self.events.recv().await.map(|response| *response)
    }
}

impl Drop for HubWatch {
    fn drop(&mut self) {
        self.shared.unroute(self.id);
        if let Some(link) = self.shared.link().filter(|l| l.generation == self.generation) {
            let _ = link.commands.send(Command::Cancel(self.id));
        }
    }
}
