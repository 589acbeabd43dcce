//! Real etcd servers (Debian's `etcd-server`): a single node or a 3-node cluster on loopback,
//! optionally with its peer traffic through a [`PeerNet`] so that a member can be partitioned.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::peer_net::PeerNet;
use crate::ports::free_port;
use crate::process::ServerProcess;
use crate::{retry_until, temp_dir};

/// How long a start may take before the harness gives up with the server's log.
const START_BOUND: Duration = Duration::from_secs(40);

/// One etcd member.
#[derive(Debug)]
pub struct EtcdMember {
    /// `etcd-0`, `etcd-1`, ...
    pub name: String,
    /// The client port on 127.0.0.1.
    pub client_port: u16,
    /// The TLS client port on 127.0.0.1, if the member serves TLS too.
    pub tls_port: Option<u16>,
    /// The process.
    pub process: ServerProcess,
}

impl EtcdMember {
    /// `127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The value of an unlabelled metric from the member's `/metrics` (for example the gauge
    /// `etcd_debugging_mvcc_watch_stream_total`), if it answers and has it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let answer = metrics_text(&self.endpoint()).await.ok()?;
        answer.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// The Prometheus text of `endpoint`'s (`host:port`) `/metrics`, within [`crate::ask`]'s bound.
pub async fn metrics_text(endpoint: &str) -> io::Result<String> {
    crate::ask(endpoint, &format!("GET /metrics HTTP/1.0\r\nHost: {endpoint}\r\n\r\n")).await
}

/// An etcd cluster of 1 or 3 members started by the harness, stopped on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members, in start order.
    pub members: Vec<EtcdMember>,
    dir: tempfile::TempDir,
    peer_net: Option<PeerNet>,
}

impl EtcdCluster {
    /// Starts `size` members with fast elections (50 ms heartbeats) and waits until every member
    /// answers and the cluster serves a write.
    pub async fn start(size: usize) -> io::Result<Self> {
        Self::start_with(size, false, None).await
    }

    /// Like [`EtcdCluster::start`], each member also serving clients over TLS with `cert`
    /// (see [`crate::tls::TestCertificates`]) on a second port ([`EtcdCluster::tls_endpoints`]),
    /// where clients must show a certificate signed by the test CA (`--client-cert-auth`). The
    /// plain port stays, for the harness's own checks.
    pub async fn start_tls(size: usize, cert: &crate::tls::TestCertificates) -> io::Result<Self> {
        Self::start_with(size, false, Some(cert)).await
    }

    /// Like [`EtcdCluster::start`], with the members' peer traffic through proxies, so that
    /// [`EtcdCluster::isolate`] can partition one member from the others.
    pub async fn start_partitionable(size: usize) -> io::Result<Self> {
        Self::start_with(size, true, None).await
    }

    async fn start_with(
        size: usize,
        partitionable: bool,
        tls: Option<&crate::tls::TestCertificates>,
    ) -> io::Result<Self> {
        let dir = temp_dir("etcd")?;
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let peer_net = match partitionable {
            true => {
                let targets: Vec<SocketAddr> = ports.iter().map(|(_, peer)| ([127, 0, 0, 1], *peer).into()).collect();
                Some(PeerNet::etcd(&targets).await?)
            }
            false => None,
        };
        // The URL the other members reach member i at: its proxy, if any.
        let advertised = |i: usize| match &peer_net {
            Some(net) => net.addr(i, i, 0).map(|a| a.port()).unwrap_or(ports[i].1),
            None => ports[i].1,
        };
        let initial_cluster =
            (0..size).map(|i| format!("etcd-{i}=http://127.0.0.1:{}", advertised(i))).collect::<Vec<_>>().join(",");
        let token = format!("distlock-{}", uuid::Uuid::new_v4());
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("etcd-{i}");
            let tls_port = tls.map(|_| free_port());
            // Listened on and advertised alike: the plain port, and the TLS one if any.
            let mut client_urls = format!("http://127.0.0.1:{client}");
            if let Some(port) = tls_port {
                client_urls.push_str(&format!(",https://127.0.0.1:{port}"));
            }
            let mut args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", dir.path().join(&name).display()),
                format!("--listen-client-urls={client_urls}"),
                format!("--advertise-client-urls={client_urls}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", advertised(i)),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token={token}"),
                "--initial-cluster-state=new".into(),
                "--heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
                "--logger=zap".into(),
                "--log-level=warn".into(),
            ];
            if let Some(cert) = tls {
                args.push(format!("--cert-file={}", cert.server_cert.display()));
                args.push(format!("--key-file={}", cert.server_key.display()));
                args.push("--client-cert-auth".into());
                args.push(format!("--trusted-ca-file={}", cert.ca_cert.display()));
            }
            let log = dir.path().join(format!("{name}.log"));
            let process = ServerProcess::start(&name, "etcd", args, log)?;
            members.push(EtcdMember { name, client_port: *client, tls_port, process });
        }
        let mut cluster = EtcdCluster { members, dir, peer_net };
        cluster.wait_ready().await?;
        if cluster.peer_net.is_some() {
            // The proxies tell members apart by the id each puts in its requests.
            let mut client = cluster.client().await.map_err(io::Error::other)?;
            let list = client.member_list().await.map_err(io::Error::other)?;
            let ids = cluster
                .members
                .iter()
                .map(|m| {
                    list.members()
                        .iter()
                        .find(|listed| listed.name() == m.name)
                        .map(|listed| format!("{:x}", listed.id()))
                        .ok_or_else(|| io::Error::other(format!("{} is not in the member list", m.name)))
                })
                .collect::<io::Result<Vec<String>>>()?;
            if let Some(net) = &mut cluster.peer_net {
                net.set_sources(ids);
            }
        }
        Ok(cluster)
    }

    /// Partitions member `member` from the others (its clients still reach it). Only for a
    /// cluster from [`EtcdCluster::start_partitionable`].
    pub fn isolate(&self, member: usize) -> io::Result<()> {
        self.peer_net.as_ref().ok_or_else(|| io::Error::other("not a partitionable cluster"))?.isolate(member)
    }

    /// Ends a partition.
    pub fn heal(&self) {
        if let Some(net) = &self.peer_net {
            net.heal();
        }
    }

    /// The client endpoints of all members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::endpoint).collect()
    }

    /// The members' TLS client endpoints (`127.0.0.1:<port>`), if started with
    /// [`EtcdCluster::start_tls`].
    pub fn tls_endpoints(&self) -> Vec<String> {
        self.members.iter().filter_map(|m| m.tls_port.map(|port| format!("127.0.0.1:{port}"))).collect()
    }

    /// The temporary directory holding data and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Waits until every running member answers a status request and the cluster takes a write.
    pub async fn wait_ready(&self) -> io::Result<()> {
        for member in &self.members {
            let endpoint = member.endpoint();
            retry_until(START_BOUND, || async {
                connect(std::slice::from_ref(&endpoint)).await?.status().await.map(drop)
            })
            .await
            .map_err(|e| {
                io::Error::other(format!(
                    "{} did not answer ({}): {e}\n{}",
                    member.name,
                    member.process.liveness(),
                    member.process.log_tail(20)
                ))
            })?;
        }
        self.wait_writable().await
    }

    /// Waits until the cluster (through any member) takes a write: it has a leader.
    pub async fn wait_writable(&self) -> io::Result<()> {
        let endpoints = self.endpoints();
        retry_until(START_BOUND, || async {
            connect(&endpoints).await?.put("distlock-test/ready", "1", None).await.map(drop)
        })
        .await
        .map_err(|e| io::Error::other(format!("the etcd cluster takes no write: {e}")))
    }

    /// A client of all members.
    pub async fn client(&self) -> Result<Client, etcd_client::Error> {
        connect(&self.endpoints()).await
    }

    /// The index of the current leader, asking each member in turn.
    pub async fn leader(&self) -> Option<usize> {
        for member in &self.members {
            let Ok(mut client) = connect(&[member.endpoint()]).await else { continue };
            let Ok(status) = client.status().await else { continue };
            let member_id = status.header().map(|h| h.member_id());
            if member_id == Some(status.leader()) {
                return Some(self.members.iter().position(|m| m.name == member.name).unwrap_or(0));
            }
        }
        None
    }
}

/// Connects with short timeouts, as tests want, to the endpoints that accept a connection now (all
/// of them if none does): a test's own reads and writes, unlike the client under test, are not
/// retried, and the client's balancer would send some to a member that a test stopped.
pub async fn connect(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    let options =
        ConnectOptions::new().with_connect_timeout(Duration::from_secs(1)).with_timeout(Duration::from_secs(2));
    let mut up = Vec::new();
    for endpoint in endpoints {
        let address = endpoint.trim_start_matches("http://").trim_start_matches("https://");
        let probe = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(address)).await;
        if matches!(probe, Ok(Ok(_))) {
            up.push(endpoint.clone());
        }
    }
    Client::connect(if up.is_empty() { endpoints } else { &up }, Some(options)).await
}
