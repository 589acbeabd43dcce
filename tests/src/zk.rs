//! Real ZooKeeper servers (Debian's `zookeeper`, run with `java` from `/usr/share/java`): a
//! standalone node or a 3-node ensemble on loopback, with a 200 ms tickTime so that session
//! timeouts down to 400 ms are allowed. An ensemble can have its peer traffic through a
//! [`PeerNet`], so that a member can be partitioned from the others.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::peer_net::PeerNet;
use crate::ports::free_port;
use crate::process::ServerProcess;
use crate::{retry_until, temp_dir};

const START_BOUND: Duration = Duration::from_secs(60);

/// The classpath of Debian's ZooKeeper (the jar's manifest names its dependencies), with
/// slf4j's simple binding (from `libslf4j-java`, a dependency of the package) so that the
/// server's log, which a failed start prints the tail of, says what the server was doing.
pub const CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/// One ZooKeeper server.
#[derive(Debug)]
pub struct ZkMember {
    /// `zk-1`, `zk-2`, ... (the myid is the number).
    pub name: String,
    /// The client port on 127.0.0.1.
    pub client_port: u16,
    /// The process.
    pub process: ServerProcess,
}

impl ZkMember {
    /// `127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Sends a four-letter command (`ruok`, `srvr`, `mntr`, ...) and returns the answer.
    pub async fn four_letter(&self, command: &str) -> io::Result<String> {
        four_letter(&self.endpoint(), command).await
    }

    /// `leader`, `follower` or `standalone`, from `srvr`.
    pub async fn mode(&self) -> io::Result<String> {
        let srvr = self.four_letter("srvr").await?;
        srvr.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_owned())
            .ok_or_else(|| io::Error::other(format!("no mode in srvr answer: {srvr:?}")))
    }
}

/// A ZooKeeper ensemble of 1 (standalone) or 3 servers started by the harness, stopped on drop.
#[derive(Debug)]
pub struct ZkEnsemble {
    /// The servers, myid order.
    pub members: Vec<ZkMember>,
    dir: tempfile::TempDir,
    peer_net: Option<PeerNet>,
}

impl ZkEnsemble {
    /// Starts `size` servers and waits until each serves (standalone, leader or follower).
    pub async fn start(size: usize) -> io::Result<Self> {
        Self::start_with(size, false, false).await
    }

    /// Like [`ZkEnsemble::start`], with the JVM compiling as ZooKeeper's own start script leaves
    /// it (full tiered compilation) instead of the tests' quick-starting C1 only: slower to start,
    /// about twice the server CPU per operation while it compiles (its first minutes under load),
    /// about 10% more hand-offs per second once warm. For long-lived benchmark servers.
    pub async fn start_as_deployed(size: usize) -> io::Result<Self> {
        Self::start_with(size, false, true).await
    }

    /// Like [`ZkEnsemble::start`], with the servers' quorum and election traffic through
    /// proxies, so that [`ZkEnsemble::isolate`] can partition one server from the others.
    pub async fn start_partitionable(size: usize) -> io::Result<Self> {
        Self::start_with(size, true, false).await
    }

    async fn start_with(size: usize, partitionable: bool, full_jit: bool) -> io::Result<Self> {
        let dir = temp_dir("zk")?;
        let ports: Vec<(u16, u16, u16)> = (0..size).map(|_| (free_port(), free_port(), free_port())).collect();
        let peer_net = match partitionable {
            true => {
                let targets: Vec<(SocketAddr, SocketAddr)> =
                    ports.iter().map(|(_, q, e)| (([127, 0, 0, 1], *q).into(), ([127, 0, 0, 1], *e).into())).collect();
                Some(PeerNet::zookeeper(&targets).await?)
            }
            false => None,
        };
        // Server `from`'s address for server `to`'s quorum (0) or election (1) port: its own
        // ports are real, the others' are the links that carry only its traffic.
        let peer_port = |from: usize, to: usize, which: usize| {
            let real = if which == 0 { ports[to].1 } else { ports[to].2 };
            peer_net.as_ref().and_then(|net| net.addr(from, to, which)).map_or(real, |a| a.port())
        };
        let mut members = Vec::new();
        for (i, (client, _, _)) in ports.iter().enumerate() {
            let id = i + 1;
            let name = format!("zk-{id}");
            let data = dir.path().join(&name);
            std::fs::create_dir_all(&data)?;
            let mut config = format!(
                "tickTime=200\ninitLimit=50\nsyncLimit=10\ndataDir={}\nclientPort={client}\nclientPortAddress=127.0.0.1\n\
                 minSessionTimeout=400\nmaxSessionTimeout=60000\nadmin.enableServer=false\n4lw.commands.whitelist=*\n\
                 maxClientCnxns=0\n",
                data.display()
            );
            if size > 1 {
                std::fs::write(data.join("myid"), format!("{id}\n"))?;
                for j in 0..size {
                    let (q, e) = (peer_port(i, j, 0), peer_port(i, j, 1));
                    config.push_str(&format!("server.{}=127.0.0.1:{q}:{e}\n", j + 1));
                }
            }
            let config_path = dir.path().join(format!("{name}.cfg"));
            std::fs::write(&config_path, config)?;
            let mut args: Vec<String> = vec!["-Xmx256m".into(), "-XX:+UseSerialGC".into()];
            if !full_jit {
                // C1 only: the JVM starts faster, which short tests need more than peak speed.
                args.push("-XX:TieredStopAtLevel=1".into());
            }
            args.extend([
                // Reap empty container nodes (lock directories) every second instead of every minute.
                "-Dznode.container.checkIntervalMs=1000".into(),
                // A server that found no peer doubles the pause before its next election round up
                // to 60 s: on a loaded machine a late peer then waits that long to join. 1 s.
                "-Dzookeeper.fastleader.maxNotificationInterval=1000".into(),
                "-Dorg.slf4j.simpleLogger.showDateTime=true".into(),
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS".into(),
                "-cp".into(),
                CLASSPATH.into(),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
                config_path.display().to_string(),
            ]);
            let log = dir.path().join(format!("{name}.log"));
            let process = ServerProcess::start(&name, "java", args, log)?;
            members.push(ZkMember { name, client_port: *client, process });
        }
        let ensemble = ZkEnsemble { members, dir, peer_net };
        ensemble.wait_ready().await?;
        Ok(ensemble)
    }

    /// Partitions server `member` (0-based) from the others (its clients still reach it). Only
    /// for an ensemble from [`ZkEnsemble::start_partitionable`].
    pub fn isolate(&self, member: usize) -> io::Result<()> {
        self.peer_net.as_ref().ok_or_else(|| io::Error::other("not a partitionable ensemble"))?.isolate(member)
    }

    /// Ends a partition.
    pub fn heal(&self) {
        if let Some(net) = &self.peer_net {
            net.heal();
        }
    }

    /// The client endpoints of all servers.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(ZkMember::endpoint).collect()
    }

    /// The connect string `h1:p1,h2:p2,...`.
    pub fn connect_string(&self) -> String {
        self.endpoints().join(",")
    }

    /// The temporary directory holding data, configs and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Waits until every running server reports a serving mode.
    pub async fn wait_ready(&self) -> io::Result<()> {
        for member in &self.members {
            retry_until(START_BOUND, || async {
                match member.mode().await?.as_str() {
                    "leader" | "follower" | "standalone" => Ok(()),
                    other => Err(io::Error::other(format!("mode {other}"))),
                }
            })
            .await
            .map_err(|e| {
                io::Error::other(format!(
                    "{} does not serve ({}): {e}\n{}",
                    member.name,
                    member.process.liveness(),
                    member.process.log_tail(40)
                ))
            })?;
        }
        Ok(())
    }

    /// The index of the leader (of a 3-node ensemble).
    pub async fn leader(&self) -> Option<usize> {
        for (i, member) in self.members.iter().enumerate() {
            if member.mode().await.ok().as_deref() == Some("leader") {
                return Some(i);
            }
        }
        None
    }

    /// A client of all servers with the given session timeout.
    pub async fn client(&self, session_timeout: Duration) -> Result<zookeeper_client::Client, zookeeper_client::Error> {
        connect(&self.connect_string(), session_timeout).await
    }
}

/// Connects with a short connection timeout, as tests want.
pub async fn connect(
    hosts: &str,
    session_timeout: Duration,
) -> Result<zookeeper_client::Client, zookeeper_client::Error> {
    zookeeper_client::Client::connector()
        .with_session_timeout(session_timeout)
        .with_connection_timeout(Duration::from_secs(2))
        .connect(hosts)
        .await
}

/// Sends a four-letter command to `endpoint` and reads the answer until the server closes.
pub async fn four_letter(endpoint: &str, command: &str) -> io::Result<String> {
    crate::ask(endpoint, command).await
}
