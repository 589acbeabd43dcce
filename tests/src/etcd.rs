//! Real etcd servers (Debian's `etcd-server`): a single node or a 3-node cluster on loopback.

use std::io;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

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
    /// The process.
    pub process: ServerProcess,
}

impl EtcdMember {
    /// `127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// An etcd cluster of 1 or 3 members started by the harness, stopped on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members, in start order.
    pub members: Vec<EtcdMember>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `size` members with fast elections (50 ms heartbeats) and waits until every member
    /// answers and the cluster serves a write.
    pub async fn start(size: usize) -> io::Result<Self> {
        let dir = temp_dir("etcd")?;
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("etcd-{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("distlock-{}", uuid::Uuid::new_v4());
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("etcd-{i}");
            let args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", dir.path().join(&name).display()),
                format!("--listen-client-urls=http://127.0.0.1:{client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token={token}"),
                "--initial-cluster-state=new".into(),
                "--heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
                "--logger=zap".into(),
                "--log-level=warn".into(),
            ];
            let log = dir.path().join(format!("{name}.log"));
            let process = ServerProcess::start(&name, "etcd", args, log)?;
            members.push(EtcdMember { name, client_port: *client, process });
        }
        let cluster = EtcdCluster { members, dir };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// The client endpoints of all members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::endpoint).collect()
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
                io::Error::other(format!("{} did not answer: {e}\n{}", member.name, member.process.log_tail(20)))
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

/// Connects with short timeouts, as tests want.
pub async fn connect(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    let options =
        ConnectOptions::new().with_connect_timeout(Duration::from_secs(1)).with_timeout(Duration::from_secs(2));
    Client::connect(endpoints, Some(options)).await
}
