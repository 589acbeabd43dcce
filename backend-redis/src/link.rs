//! The client's one connection to Redis: requests and pub/sub messages share it (RESP3 pushes).
//! A connection that fails is dropped and made anew on the next use, and every channel
//! subscribed through [`Link::subscribe`] is subscribed again on it; each new connection bumps
//! the link's epoch, so those who wait for messages know that some may have been missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, RedisError, Value};
use tokio::sync::watch;

use crate::config::RedisConfig;

/// Called with each message published on a subscribed channel.
pub(crate) type Route = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Who hears each subscribed channel: (subscription id, route) each.
type Routes = HashMap<Vec<u8>, Vec<(u64, Route)>>;

/// One connection at a time, and the channels to subscribe on each.
pub(crate) struct Link {
    client: redis::Client,
    config: Arc<RedisConfig>,
    shared: Arc<Shared>,
    connecting: tokio::sync::Mutex<()>,
}

struct Shared {
    /// The current connection and its number.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Subscribed channels and who hears them.
    routes: Mutex<Routes>,
    next_id: AtomicU64,
    /// The number of connections made so far.
    epoch: watch::Sender<u64>,
}

impl Shared {
    fn deliver(&self, info: PushInfo) {
        if info.kind != PushKind::Message {
            return;
        }
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(message))) =
            (info.data.first(), info.data.get(1))
        else {
            return;
        };
        let routes: Vec<Route> = {
            let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            routes.get(channel).map(|r| r.iter().map(|(_, route)| route.clone()).collect()).unwrap_or_default()
        };
        for route in routes {
            route(message);
        }
    }

    /// Forgets connection `id` if it is still the current one.
    fn drop_connection(&self, id: u64) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|(current, _)| *current == id) {
            *current = None;
        }
    }
}

/// A channel subscription: unsubscribed when dropped (if nobody else listens on the channel).
pub(crate) struct Subscription {
    link: Weak<Shared>,
    connection: Option<MultiplexedConnection>,
    channel: Vec<u8>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(shared) = self.link.upgrade() else { return };
        let last = {
            let mut routes = shared.routes.lock().unwrap_or_else(|p| p.into_inner());
            let listeners = routes.entry(self.channel.clone()).or_default();
            listeners.retain(|(id, _)| *id != self.id);
            let last = listeners.is_empty();
            if last {
                routes.remove(&self.channel);
            }
            last
        };
        let connection = shared.current.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, c)| c.clone());
        if let (true, Some(mut connection), Ok(runtime)) =
            (last, connection.or(self.connection.take()), tokio::runtime::Handle::try_current())
        {
            let channel = self.channel.clone();
            runtime.spawn(async move {
                let _ = connection.unsubscribe(channel).await;
            });
        }
    }
}

impl Link {
    /// A link to `client`; it connects on first use.
    pub(crate) fn new(client: redis::Client, config: Arc<RedisConfig>) -> Self {
        let shared = Arc::new(Shared {
            current: Mutex::new(None),
            routes: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            epoch: watch::channel(0).0,
        });
        Link { client, config, shared, connecting: tokio::sync::Mutex::new(()) }
    }

    /// The current connection, made (and subscribed to every channel) if there is none.
    ///
    /// # Cancel safety
    /// Cancel safe: a connection made halfway is dropped.
    pub(crate) async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(&self.shared);
        let pushes = move |info: PushInfo| {
            if let Some(shared) = weak.upgrade() {
                if info.kind == PushKind::Disconnection {
                    shared.drop_connection(id);
                } else {
                    shared.deliver(info);
                }
            }
            Ok::<(), redis::aio::SendError>(())
        };
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.request_timeout))
            .set_push_sender(pushes);
        let mut connection = self.client.get_multiplexed_async_connection_with_config(&settings).await?;
        let channels: Vec<Vec<u8>> =
            self.shared.routes.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        if !channels.is_empty() {
            connection.subscribe(channels).await?;
        }
        *self.shared.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, connection.clone()));
        self.shared.epoch.send_modify(|epoch| *epoch += 1);
        tracing::debug!(endpoint = %self.config.endpoint_label(), connection = id, "redis connection made");
        Ok((id, connection))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.shared.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Drops connection `id` after a failed request: the next request makes a new one.
    pub(crate) fn reset(&self, id: u64) {
        self.shared.drop_connection(id);
    }

    /// Drops the current connection, whichever it is (a test's fault injection; a client
    /// closing).
    pub(crate) fn reset_current(&self) {
        *self.shared.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The epoch: bumped by every new connection (messages may have been missed before it).
    pub(crate) fn epoch(&self) -> watch::Receiver<u64> {
        self.shared.epoch.subscribe()
    }

    /// Hears messages on `channel` with `route` until the subscription is dropped; every later
    /// connection subscribes it too. Fails if the current connection cannot subscribe.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call leaves no route behind.
    pub(crate) async fn subscribe(&self, channel: String, route: Route) -> Result<Subscription, RedisError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let channel = channel.into_bytes();
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(channel.clone())
            .or_default()
            .push((id, route));
        let mut subscription = Subscription { link: Arc::downgrade(&self.shared), connection: None, channel, id };
        let (connection_id, mut connection) = self.connection().await?;
        if let Err(error) = connection.subscribe(subscription.channel.clone()).await {
            self.reset(connection_id);
            return Err(error);
        }
        subscription.connection = Some(connection);
        Ok(subscription)
    }
}
