//! A TCP proxy in front of a server, so a test can cut, black-hole or delay a client's
//! connections without touching the server: the network faults of real deployments.

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
    /// The mode new connections start with.
    default_mode: Mutex<ProxyMode>,
    /// While true, new connections are closed at once and none are forwarded.
    refusing: Mutex<bool>,
    next_id: Mutex<u64>,
    connections: Mutex<HashMap<u64, Connection>>,
}

#[derive(Debug)]
struct Connection {
    mode: watch::Sender<ProxyMode>,
    pumps: [JoinHandle<()>; 2],
}

impl TcpProxy {
    /// Starts a proxy to `target` on a free loopback port.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
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
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
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
        let Ok(outbound) = TcpStream::connect(shared.target).await else { continue };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let mode = *shared.default_mode.lock().unwrap();
        let (mode_tx, mode_rx) = watch::channel(mode);
        let (in_read, in_write) = inbound.into_split();
        let (out_read, out_write) = outbound.into_split();
        let pumps = [
            tokio::spawn(pump(in_read, out_write, mode_rx.clone(), Direction::ToServer)),
            tokio::spawn(pump(out_read, in_write, mode_rx, Direction::ToClient)),
        ];
        let id = {
            let mut next = shared.next_id.lock().unwrap();
            *next += 1;
            *next
        };
        shared.connections.lock().unwrap().insert(id, Connection { mode: mode_tx, pumps });
    }
}

/// Copies bytes one way, obeying the connection's mode.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
    direction: Direction,
) {
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

    /// Passes again and resets every connection: what a client sees after replies were lost.
    pub fn reset_connections(&self) {
        for proxy in &self.proxies {
            proxy.set_mode(ProxyMode::Pass);
            proxy.close_all();
        }
    }
}
