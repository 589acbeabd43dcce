//! A TCP proxy in front of a server, so a test can cut, black-hole or delay a client's
//! connections without touching the server: the network faults of real deployments. A proxy
//! can also tell who opened each connection ([`FirstMessage`]) and hold back only some
//! sources' traffic: that is how [`crate::peer_net`] partitions one cluster member.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with a connection's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything at once.
    Pass,
    /// Forward everything after this delay (each chunk, each direction).
    Delay(Duration),
    /// Keep the connection open but forward nothing: requests and replies vanish, as on a
    /// network that silently drops packets. New connections are accepted and black-holed too.
    BlackHole,
    /// Forward requests to the server but swallow its replies: the server acts, the client
    /// hears nothing (an ambiguous reply).
    DropReplies,
}

/// Which way a pump copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

impl ProxyMode {
    /// Whether bytes going `direction` are held back in this mode.
    fn holds(self, direction: Direction) -> bool {
        match self {
            ProxyMode::BlackHole => true,
            ProxyMode::DropReplies => direction == Direction::ToClient,
            ProxyMode::Pass | ProxyMode::Delay(_) => false,
        }
    }
}

/// What a proxy does with the first message a peer sends on each new connection: it reads
/// the message whole, learns from it who opened the connection, and forwards it (or a
/// rewritten version) before pumping the rest.
pub trait FirstMessage: Send + Sync + std::fmt::Debug {
    /// The length of the first message, once `so_far` (everything read yet) tells it; `None`
    /// while more bytes are needed.
    fn length(&self, so_far: &[u8]) -> Option<usize>;
    /// Who sent `message` (`None`: unknown), and the bytes to forward in its place.
    fn read(&self, message: &[u8]) -> (Option<String>, Vec<u8>);
}

/// Which connections a proxy holds back (black-holes) while isolating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Every connection, whoever opened it.
    Everyone,
    /// Only connections opened by this source.
    Source(String),
}

impl Isolation {
    fn holds(&self, source: Option<&str>) -> bool {
        match self {
            Isolation::Everyone => true,
            Isolation::Source(isolated) => source == Some(isolated.as_str()),
        }
    }
}

/// How a proxy treats its connections, beyond forwarding them.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// How the proxy learns who opened a connection, for [`TcpProxy::isolate`]: unknown if
    /// `None`.
    pub first_message: Option<Arc<dyn FirstMessage>>,
    /// How long to keep trying to reach the target when it refuses. Zero closes the accepted
    /// connection at once, as the client's own refused connect would fail. Peers that read a
    /// closed connection as "the server went away" rather than "not there yet" (a ZooKeeper
    /// follower joining a leader that is still opening its port) want some patience.
    pub connect_patience: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions { first_message: None, connect_patience: Duration::ZERO }
    }
}

/// How long a proxy waits for a connection's first message.
const FIRST_MESSAGE_BOUND: Duration = Duration::from_secs(2);
/// The most it reads looking for the end of the first message.
const FIRST_MESSAGE_MAX: usize = 16 * 1024;

/// A proxy from a loopback port to `target`. Stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    first_message: Option<Arc<dyn FirstMessage>>,
    connect_patience: Duration,
    /// Set while isolating: matching connections, current and new, are black-holed.
    isolation: Mutex<Option<Isolation>>,
    /// Set on drop, so that a connection still being opened does not outlive the proxy.
    stopped: Mutex<bool>,
    /// The mode new connections start with.
    default_mode: Mutex<ProxyMode>,
    /// While true, new connections are closed at once and none are forwarded.
    refusing: Mutex<bool>,
    next_id: Mutex<u64>,
    connections: Mutex<HashMap<u64, Connection>>,
}

#[derive(Debug)]
struct Connection {
    source: Option<String>,
    mode: watch::Sender<ProxyMode>,
    pumps: [JoinHandle<()>; 2],
}

impl TcpProxy {
    /// Starts a proxy to `target` on a free loopback port.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        Self::start_with(target, ProxyOptions::default()).await
    }

    /// Starts a proxy to `target` on a free loopback port, with `options`.
    pub async fn start_with(target: SocketAddr, options: ProxyOptions) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            first_message: options.first_message,
            connect_patience: options.connect_patience,
            isolation: Mutex::new(None),
            stopped: Mutex::new(false),
            default_mode: Mutex::new(ProxyMode::Pass),
            refusing: Mutex::new(false),
            next_id: Mutex::new(0),
            connections: Mutex::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(TcpProxy { addr, shared, accept })
    }

    /// The proxy's own address: give it to the client instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>` of the proxy.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Sets the mode of every current connection and of new ones.
    pub fn set_mode(&self, mode: ProxyMode) {
        *self.shared.default_mode.lock().unwrap() = mode;
        for connection in self.shared.connections.lock().unwrap().values() {
            connection.mode.send_replace(mode);
        }
    }

    /// Sets the mode of one connection (ids from [`TcpProxy::connections`]).
    pub fn set_connection_mode(&self, id: u64, mode: ProxyMode) -> bool {
        match self.shared.connections.lock().unwrap().get(&id) {
            Some(connection) => {
                connection.mode.send_replace(mode);
                true
            }
            None => false,
        }
    }

    /// The ids of the open connections, oldest first.
    pub fn connections(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.shared.connections.lock().unwrap().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Closes every connection and refuses new ones until [`TcpProxy::heal`]: the client sees
    /// its connections reset and cannot reconnect.
    pub fn cut(&self) {
        *self.shared.refusing.lock().unwrap() = true;
        self.close_all();
    }

    /// Closes every current connection; new ones are accepted (a connection blip).
    pub fn close_all(&self) {
        let closed: Vec<Connection> = self.shared.connections.lock().unwrap().drain().map(|(_, c)| c).collect();
        for connection in closed {
            for pump in connection.pumps {
                pump.abort();
            }
        }
    }

    /// Ends a cut and sets every connection back to [`ProxyMode::Pass`].
    pub fn heal(&self) {
        *self.shared.refusing.lock().unwrap() = false;
        self.set_mode(ProxyMode::Pass);
    }

    /// Black-holes the connections `isolation` names, current and new, until
    /// [`TcpProxy::end_isolation`]: their bytes go nowhere, as in a network partition.
    pub fn isolate(&self, isolation: Isolation) {
        let connections = self.shared.connections.lock().unwrap();
        for connection in connections.values() {
            if isolation.holds(connection.source.as_deref()) {
                connection.mode.send_replace(ProxyMode::BlackHole);
            }
        }
        *self.shared.isolation.lock().unwrap() = Some(isolation);
    }

    /// Ends an isolation: the connections it held are closed (the peers reconnect, as after a
    /// partition heals and their connections time out), new ones pass again.
    pub fn end_isolation(&self) {
        let Some(isolation) = self.shared.isolation.lock().unwrap().take() else { return };
        let held: Vec<Connection> = {
            let mut connections = self.shared.connections.lock().unwrap();
            let ids: Vec<u64> =
                connections.iter().filter(|(_, c)| isolation.holds(c.source.as_deref())).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| connections.remove(id)).collect()
        };
        for connection in held {
            connection.pumps.iter().for_each(JoinHandle::abort);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        {
            let _connections = self.shared.connections.lock().unwrap();
            *self.shared.stopped.lock().unwrap() = true;
        }
        self.accept.abort();
        self.close_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        if *shared.refusing.lock().unwrap() {
            drop(inbound);
            continue;
        }
        if shared.first_message.is_none() && shared.connect_patience.is_zero() {
            forward(inbound, Vec::new(), None, &shared).await;
            continue;
        }
        // Reading the first message or waiting for the target may take a while: do not hold
        // up other connections meanwhile.
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut inbound = inbound;
            let (source, first) = match &shared.first_message {
                None => (None, Vec::new()),
                Some(first_message) => {
                    let Some((message, rest)) = read_first_message(&mut inbound, &**first_message).await else {
                        return; // closed, too long or too slow: drop it, as a server would
                    };
                    let (source, mut first) = first_message.read(&message);
                    first.extend_from_slice(&rest); // bytes past the message go on untouched
                    (source, first)
                }
            };
            forward(inbound, first, source, &shared).await;
        });
    }
}

/// Reads the first message whole, within [`FIRST_MESSAGE_BOUND`] and [`FIRST_MESSAGE_MAX`]:
/// the message, and whatever was read past it.
async fn read_first_message(inbound: &mut TcpStream, first_message: &dyn FirstMessage) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(FIRST_MESSAGE_BOUND, async {
        loop {
            if let Some(length) = first_message.length(&read) {
                if read.len() >= length {
                    let rest = read.split_off(length);
                    return Some((read, rest));
                }
            }
            if read.len() >= FIRST_MESSAGE_MAX {
                return None;
            }
            match inbound.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Connects to the target and pumps both ways, starting with `first` (bytes already read from
/// `inbound`), which obey the connection's mode like the rest.
async fn forward(inbound: TcpStream, first: Vec<u8>, source: Option<String>, shared: &Shared) {
    let deadline = tokio::time::Instant::now() + shared.connect_patience;
    let outbound = loop {
        match TcpStream::connect(shared.target).await {
            Ok(outbound) => break outbound,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return,
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    // Under the connections lock, so that an isolation starting now cannot miss this one.
    let mut connections = shared.connections.lock().unwrap();
    if *shared.stopped.lock().unwrap() {
        return;
    }
    let isolated = shared.isolation.lock().unwrap().as_ref().is_some_and(|i| i.holds(source.as_deref()));
    let mode = if isolated { ProxyMode::BlackHole } else { *shared.default_mode.lock().unwrap() };
    let (mode_tx, mode_rx) = watch::channel(mode);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let pumps = [
        tokio::spawn(pump(first, in_read, out_write, mode_rx.clone(), Direction::ToServer)),
        tokio::spawn(pump(Vec::new(), out_read, in_write, mode_rx, Direction::ToClient)),
    ];
    let id = {
        let mut next = shared.next_id.lock().unwrap();
        *next += 1;
        *next
    };
    connections.insert(id, Connection { source, mode: mode_tx, pumps });
}

/// Copies bytes one way, `pending` (already read) first, obeying the connection's mode.
async fn pump(
    pending: Vec<u8>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
    direction: Direction,
) {
    if !pending.is_empty() {
        // Held back like any bytes, until the mode lets them through (or the connection ends).
        if mode.wait_for(|m| !m.holds(direction)).await.is_err() || to.write_all(&pending).await.is_err() {
            return;
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While held back, read nothing: the bytes wait in the kernel, undelivered.
        if mode.wait_for(|m| !m.holds(direction)).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.changed() => continue,
        };
        let current = *mode.borrow();
        if current.holds(direction) {
            continue; // switched while reading: swallow what was read
        }
        if let ProxyMode::Delay(delay) = current {
            tokio::time::sleep(delay).await;
            if mode.borrow().holds(direction) {
                continue; // switched while in transit: lost with the link
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// One proxy per server of a cluster, so that a client can be cut off from all of them at once.
#[derive(Debug)]
pub struct ProxySet {
    proxies: Vec<TcpProxy>,
}

impl ProxySet {
    /// A proxy in front of each of `endpoints` (`host:port`).
    pub async fn start(endpoints: &[String]) -> io::Result<Self> {
        let mut proxies = Vec::new();
        for endpoint in endpoints {
            let target = endpoint.parse().map_err(|e| io::Error::other(format!("{endpoint}: {e}")))?;
            proxies.push(TcpProxy::start(target).await?);
        }
        Ok(ProxySet { proxies })
    }

    /// The proxies' endpoints, to give the client instead of the servers'.
    pub fn endpoints(&self) -> Vec<String> {
        self.proxies.iter().map(TcpProxy::endpoint).collect()
    }

    /// Every proxy in `mode`.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.proxies.iter().for_each(|p| p.set_mode(mode));
    }

    /// Black-holes every connection: the client hears nothing and nothing it sends arrives.
    pub fn cut(&self) {
        self.set_mode(ProxyMode::BlackHole);
    }

    /// Back to passing everything.
    pub fn heal(&self) {
        self.proxies.iter().for_each(TcpProxy::heal);
    }

    /// Resets every connection, then passes again: what a client sees after replies were lost.
    /// In that order: a reply held back in the kernel would otherwise slip through to the
    /// client in the moment between passing and closing.
    pub fn reset_connections(&self) {
        for proxy in &self.proxies {
            proxy.close_all();
            proxy.set_mode(ProxyMode::Pass);
        }
    }
}
