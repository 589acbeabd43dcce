//! The network between the members of a 3-node cluster, made of proxies, so that a test can
//! partition one member from the others while clients still reach every member: the "member
//! partitioned from its peers" fault.
//!
//! Two shapes, because the servers find their peers differently:
//! - **etcd: one proxy per member** in front of its peer port ([`PeerNet::etcd`]). Every
//!   member is told the same peer URLs (they are part of the cluster's membership), so the
//!   proxy learns who opened a connection from the peer's first request
//!   ([`EtcdPeerRequest`]).
//! - **ZooKeeper: one link per ordered pair of servers and port** ([`PeerNet::zookeeper`]).
//!   Each server reads its own config, so server A's config can name the link "A to B" as B's
//!   address, and that link only ever carries A's connections to B. A server announces its
//!   own election address when it connects, and the other may call it back there: the
//!   election links rewrite that announcement ([`ZkElectionHello`]), or the isolated server
//!   would still reach the others through the call-back.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::proxy::{FirstMessage, Isolation, ProxyOptions, TcpProxy};

/// How long a link keeps trying a peer port that refuses: a ZooKeeper leader opens its quorum
/// port only once elected, and a follower that finds the connection closed (rather than
/// refused) starts a new election round instead of retrying.
const CONNECT_PATIENCE: Duration = Duration::from_secs(2);

/// One proxy of the net.
#[derive(Debug)]
struct PeerLink {
    proxy: TcpProxy,
    /// The member whose connections the proxy carries, if only one member uses it.
    from: Option<usize>,
    /// The member the proxy leads to.
    to: usize,
    /// Which of `to`'s peer ports.
    port: usize,
}

/// The proxies between a cluster's members; [`PeerNet::isolate`] partitions one of them.
#[derive(Debug)]
pub struct PeerNet {
    links: Vec<PeerLink>,
    /// What the proxies read off a connection from each member (per-member shape only).
    sources: Vec<String>,
}

impl PeerNet {
    /// etcd's shape: one proxy in front of each member's peer port (`targets[i]`), telling
    /// members apart by the `X-Server-From` header of their requests. Name the members' ids
    /// with [`PeerNet::set_sources`] before isolating one.
    pub async fn etcd(targets: &[SocketAddr]) -> io::Result<Self> {
        let mut links = Vec::new();
        for (to, target) in targets.iter().enumerate() {
            let options =
                ProxyOptions { first_message: Some(Arc::new(EtcdPeerRequest)), connect_patience: CONNECT_PATIENCE };
            links.push(PeerLink { proxy: TcpProxy::start_with(*target, options).await?, from: None, to, port: 0 });
        }
        Ok(PeerNet { links, sources: Vec::new() })
    }

    /// ZooKeeper's shape: one link for each ordered pair of servers and each of the target's
    /// ports (`targets[i]` = server i's quorum and election ports, numbered 0 and 1). The
    /// election link rewrites the address a server announces in its first message to the link
    /// back to it, because the receiver calls that address back.
    pub async fn zookeeper(targets: &[(SocketAddr, SocketAddr)]) -> io::Result<Self> {
        let mut links = Vec::new();
        let mut callbacks = Vec::new();
        for from in 0..targets.len() {
            for (to, (quorum, election)) in targets.iter().enumerate().filter(|(to, _)| *to != from) {
                let options = ProxyOptions { connect_patience: CONNECT_PATIENCE, ..ProxyOptions::default() };
                links.push(PeerLink {
                    proxy: TcpProxy::start_with(*quorum, options).await?,
                    from: Some(from),
                    to,
                    port: 0,
                });
                let hello = Arc::new(ZkElectionHello::default());
                let options = ProxyOptions { first_message: Some(hello.clone()), connect_patience: CONNECT_PATIENCE };
                links.push(PeerLink {
                    proxy: TcpProxy::start_with(*election, options).await?,
                    from: Some(from),
                    to,
                    port: 1,
                });
                callbacks.push((from, to, hello));
            }
        }
        let net = PeerNet { links, sources: Vec::new() };
        for (from, to, hello) in callbacks {
            // `to` calls `from` back through the link from `to` to `from`.
            let back = net.addr(to, from, 1).ok_or_else(|| io::Error::other("no link back"))?;
            let _ = hello.call_back_at.set(back);
        }
        Ok(net)
    }

    /// What each member's connections are recognised by (per-member shape), in member order.
    pub fn set_sources(&mut self, sources: Vec<String>) {
        self.sources = sources;
    }

    /// The address member `from` must use for member `to`'s peer port number `port`, or `None`
    /// if the net has no such link. In the per-member shape every member uses the same one.
    pub fn addr(&self, from: usize, to: usize, port: usize) -> Option<SocketAddr> {
        self.links
            .iter()
            .find(|l| l.to == to && l.port == port && l.from.is_none_or(|f| f == from))
            .map(|l| l.proxy.addr())
    }

    /// Partitions `member` from the others: nothing it sends its peers arrives, nothing they
    /// send it arrives. Clients' connections are not touched.
    pub fn isolate(&self, member: usize) -> io::Result<()> {
        let source = match self.links.iter().any(|l| l.from.is_none()) {
            true => Some(self.sources.get(member).cloned().ok_or_else(|| {
                io::Error::other(format!("member {member}'s connections have no known source: call set_sources"))
            })?),
            false => None,
        };
        for link in &self.links {
            if link.to == member || link.from == Some(member) {
                link.proxy.isolate(Isolation::Everyone);
            } else if let (None, Some(source)) = (link.from, &source) {
                link.proxy.isolate(Isolation::Source(source.clone()));
            }
        }
        Ok(())
    }

    /// Ends the partition.
    pub fn heal(&self) {
        self.links.iter().for_each(|l| l.proxy.end_isolation());
    }
}

/// An etcd peer's first request on a connection: its head names the sending member in the
/// `X-Server-From` header (raft streams, pipelined messages and snapshots all carry it).
#[derive(Debug)]
pub struct EtcdPeerRequest;

impl FirstMessage for EtcdPeerRequest {
    fn length(&self, so_far: &[u8]) -> Option<usize> {
        so_far.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
    }

    fn read(&self, message: &[u8]) -> (Option<String>, Vec<u8>) {
        let source = std::str::from_utf8(message).ok().and_then(|head| {
            head.split("\r\n").find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("x-server-from").then(|| value.trim().to_owned())
            })
        });
        (source, message.to_vec())
    }
}

/// The first message of a ZooKeeper election connection: protocol version (i64, negative),
/// the sender's id (i64), and the election address(es) it listens on (i32 length, then
/// `host:port`, several joined by `|`). An old-protocol sender sends only its id.
#[derive(Debug, Default)]
pub struct ZkElectionHello {
    /// The address to announce instead: the link back to the sender.
    call_back_at: OnceLock<SocketAddr>,
}

/// Longer than any address list a server announces: anything longer is not a hello.
const ZK_HELLO_ADDRESS_MAX: usize = 4096;

impl FirstMessage for ZkElectionHello {
    fn length(&self, so_far: &[u8]) -> Option<usize> {
        let protocol = i64::from_be_bytes(so_far.get(..8)?.try_into().ok()?);
        if protocol >= 0 {
            return Some(8);
        }
        let length = i32::from_be_bytes(so_far.get(16..20)?.try_into().ok()?);
        match usize::try_from(length) {
            Ok(length) if length <= ZK_HELLO_ADDRESS_MAX => Some(20 + length),
            _ => Some(20), // not a hello we understand: forward it as it is
        }
    }

    fn read(&self, message: &[u8]) -> (Option<String>, Vec<u8>) {
        match (message.len() > 20, self.call_back_at.get()) {
            (true, Some(back)) => {
                let address = back.to_string().into_bytes();
                let mut rewritten = message[..16].to_vec();
                rewritten.extend_from_slice(&(address.len() as i32).to_be_bytes());
                rewritten.extend_from_slice(&address);
                (None, rewritten)
            }
            _ => (None, message.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcd_source_is_the_x_server_from_header() {
        let cases: [(&[u8], Option<&str>); 4] = [
            (
                b"GET /raft/stream/message/8e9e HTTP/1.1\r\nHost: x\r\nX-Server-From: 8e9e05c52164694d\r\n\r\n",
                Some("8e9e05c52164694d"),
            ),
            (
                b"POST /raft HTTP/1.1\r\nx-server-from:  ab12 \r\nContent-Type: application/protobuf\r\n\r\n",
                Some("ab12"),
            ),
            (b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n", None),
            (b"\xff\xfe not text\r\n\r\n", None),
        ];
        for (head, want) in cases {
            assert_eq!(EtcdPeerRequest.length(head), Some(head.len()));
            assert_eq!(
                EtcdPeerRequest.read(head),
                (want.map(str::to_owned), head.to_vec()),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(EtcdPeerRequest.length(b"GET / HTTP/1.1\r\nHost"), None, "a head is read whole");
    }

    fn zk_hello(protocol: i64, sid: i64, address: &str) -> Vec<u8> {
        let mut hello = protocol.to_be_bytes().to_vec();
        hello.extend_from_slice(&sid.to_be_bytes());
        hello.extend_from_slice(&(address.len() as i32).to_be_bytes());
        hello.extend_from_slice(address.as_bytes());
        hello
    }

    #[test]
    fn the_zookeeper_hello_announces_the_link_back() {
        let hello = ZkElectionHello::default();
        let sent = zk_hello(-65536, 2, "127.0.0.1:3888");
        assert_eq!(hello.length(&sent[..19]), None, "the header is read whole");
        assert_eq!(hello.length(&sent), Some(sent.len()));
        assert_eq!(hello.read(&sent).1, sent, "nothing to rewrite to yet: unchanged");
        hello.call_back_at.set("127.0.0.1:4000".parse().unwrap()).unwrap();
        assert_eq!(hello.read(&sent).1, zk_hello(-65536, 2, "127.0.0.1:4000"));
        let several = zk_hello(-65535, 2, "127.0.0.1:3888|10.0.0.1:3888");
        assert_eq!(hello.read(&several).1, zk_hello(-65535, 2, "127.0.0.1:4000"), "every address replaced");
        let old_protocol = 7i64.to_be_bytes();
        assert_eq!(hello.length(&old_protocol), Some(8), "an old-protocol hello is the id alone");
        assert_eq!(hello.read(&old_protocol).1, old_protocol);
        let absurd = zk_hello(-65536, 2, "");
        let mut absurd = absurd[..16].to_vec();
        absurd.extend_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(hello.length(&absurd), Some(20), "a length it cannot read: forwarded as it is");
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `n` echo servers on loopback, standing in for members' peer ports.
    async fn echo_servers(n: usize) -> Vec<SocketAddr> {
        let mut addrs = Vec::new();
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 256];
                        while let Ok(n) = socket.read(&mut buf).await {
                            if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        addrs
    }

    /// Whether `hello` sent to `addr` comes back within 300 ms.
    async fn echoes(addr: SocketAddr, hello: &[u8]) -> bool {
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(hello).await?;
            let mut buf = vec![0u8; hello.len()];
            s.read_exact(&mut buf).await?;
            Ok::<_, io::Error>(buf == hello)
        };
        matches!(tokio::time::timeout(Duration::from_millis(300), exchange).await, Ok(Ok(true)))
    }

    #[tokio::test]
    async fn isolating_a_member_cuts_exactly_its_pair_links() {
        let echoes_at = echo_servers(6).await;
        let targets: Vec<(SocketAddr, SocketAddr)> = echoes_at.chunks(2).map(|p| (p[0], p[1])).collect();
        let net = PeerNet::zookeeper(&targets).await.unwrap();
        assert_eq!(net.addr(0, 0, 0), None, "no link from a member to itself");
        let link = |from, to| net.addr(from, to, 0).unwrap();
        net.isolate(1).unwrap();
        for (from, to) in [(0, 1), (1, 0), (1, 2), (2, 1)] {
            assert!(!echoes(link(from, to), b"ping").await, "{from} -> {to} must be cut");
        }
        assert!(echoes(link(0, 2), b"ping").await && echoes(link(2, 0), b"ping").await, "the majority still talks");
        net.heal();
        assert!(echoes(link(0, 1), b"ping").await && echoes(link(1, 2), b"ping").await, "healed");
    }

    #[tokio::test]
    async fn a_connection_opened_by_an_isolated_member_delivers_nothing_not_even_its_first_request() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Member 0's peer port counts the bytes it receives.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        counter.fetch_add(n, Ordering::SeqCst);
                    }
                });
            }
        });
        let mut net = PeerNet::etcd(&[target, target]).await.unwrap();
        net.set_sources(vec!["m0".into(), "m1".into()]);
        net.isolate(1).unwrap();
        let mut from_isolated = tokio::net::TcpStream::connect(net.addr(1, 0, 0).unwrap()).await.unwrap();
        from_isolated.write_all(b"POST /raft HTTP/1.1\r\nX-Server-From: m1\r\n\r\nraft message").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(received.load(Ordering::SeqCst), 0, "the isolated member's request reached its peer");
    }

    #[tokio::test]
    async fn isolating_a_member_cuts_its_connections_by_their_source() {
        let targets = echo_servers(3).await;
        let mut net = PeerNet::etcd(&targets).await.unwrap();
        let hello = |from: &str| format!("POST /raft HTTP/1.1\r\nX-Server-From: {from}\r\n\r\n").into_bytes();
        let proxies: Vec<SocketAddr> = (0..3).map(|member| net.addr(0, member, 0).unwrap()).collect();
        let to = |member: usize| proxies[member];
        assert!(net.isolate(1).is_err(), "no sources named yet: refused, nothing isolated");
        assert!(echoes(to(1), &hello("m0")).await);
        net.set_sources(vec!["m0".into(), "m1".into(), "m2".into()]);
        net.isolate(1).unwrap();
        assert!(!echoes(to(1), &hello("m0")).await, "nobody reaches the isolated member");
        assert!(!echoes(to(2), &hello("m1")).await, "the isolated member reaches nobody");
        assert!(echoes(to(2), &hello("m0")).await, "the majority still talks");
        net.heal();
        assert!(echoes(to(1), &hello("m0")).await && echoes(to(2), &hello("m1")).await, "healed");
    }
}
