//! Real Redis servers (Debian's `redis-server`, or the one `DISTLOCK_REDIS_SERVER` names): a
//! single primary, or a primary with a replica, on loopback with temporary directories; with
//! `appendonly yes` + `appendfsync always` when a test needs restarts to keep every grant.

use std::io;
use std::time::Duration;

use crate::ports::free_port;
use crate::process::ServerProcess;
use crate::{retry_until, temp_dir};

/// How long a start may take before the harness gives up with the server's log.
const START_BOUND: Duration = Duration::from_secs(20);

/// The `redis-server` the harness runs: `DISTLOCK_REDIS_SERVER` if set (the test command runs
/// the Redis suites a second time on Redis 6.2 this way), else the one on `PATH`.
pub fn server_program() -> String {
    std::env::var("DISTLOCK_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// How a server keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Memory only (no RDB, no AOF): a restart loses everything.
    None,
    /// `appendonly yes` with `appendfsync always`: every write is on disk before its reply (and
    /// no RDB preamble: the AOF is all commands, for [`crate::redis_aof`] to replay).
    AppendFsyncAlways,
}

/// One `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The TLS port on 127.0.0.1, if the server also serves TLS.
    pub tls_port: Option<u16>,
    /// The password the server requires (`requirepass`), if any.
    pub password: Option<String>,
    /// The process.
    pub process: ServerProcess,
}

impl RedisServer {
    /// `127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A plain client of this server (RESP2), for checks behind the library's back.
    pub async fn admin(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let password = self.password.as_deref().map(|p| format!(":{p}@")).unwrap_or_default();
        redis::Client::open(format!("redis://{password}{}", self.endpoint()))?.get_multiplexed_async_connection().await
    }
}

/// A primary and, optionally, its replica, started by the harness and stopped on drop.
#[derive(Debug)]
pub struct RedisDeployment {
    /// The primary: clients talk to it.
    pub primary: RedisServer,
    /// The replica (`replicaof` the primary), if started.
    pub replica: Option<RedisServer>,
    /// The proxy the replica's link to the primary goes through, if started so
    /// ([`RedisDeployment::start_with_replica_link`]): cut it and the replica falls behind.
    pub replica_link: Option<crate::TcpProxy>,
    dir: tempfile::TempDir,
}

impl RedisDeployment {
    /// Starts a primary, and a replica of it if `replica`, keeping data as `durability` says,
    /// and waits until the primary answers (and the replica has synced).
    pub async fn start(replica: bool, durability: Durability) -> io::Result<Self> {
        let dir = temp_dir("redis")?;
        let primary = start_server(&dir, "redis-primary", durability, None, None)?;
        let replica = match replica {
            true => Some(start_server(&dir, "redis-replica", durability, Some(primary.port), None)?),
            false => None,
        };
        let deployment = RedisDeployment { primary, replica, replica_link: None, dir };
        deployment.wait_ready().await?;
        Ok(deployment)
    }

    /// A primary and a replica whose replication link goes through a proxy
    /// ([`RedisDeployment::replica_link`]), for failover tests.
    pub async fn start_with_replica_link(durability: Durability) -> io::Result<Self> {
        let dir = temp_dir("redis")?;
        let primary = start_server(&dir, "redis-primary", durability, None, None)?;
        let link = crate::TcpProxy::start(([127, 0, 0, 1], primary.port).into()).await?;
        let replica = start_server(&dir, "redis-replica", durability, Some(link.addr().port()), None)?;
        let deployment = RedisDeployment { primary, replica: Some(replica), replica_link: Some(link), dir };
        deployment.wait_ready().await?;
        Ok(deployment)
    }

    /// A primary that requires `password` and also serves TLS with `cert`'s server certificate
    /// (clients need not show one) on [`RedisServer::tls_port`].
    pub async fn start_tls(cert: &crate::tls::TestCertificates, password: &str) -> io::Result<Self> {
        let dir = temp_dir("redis")?;
        let primary = start_server(&dir, "redis-primary", Durability::None, None, Some((cert, password)))?;
        let deployment = RedisDeployment { primary, replica: None, replica_link: None, dir };
        deployment.wait_ready().await?;
        Ok(deployment)
    }

    /// Makes the replica a primary (`REPLICAOF NO ONE`), as a failover does.
    pub async fn promote_replica(&self) -> io::Result<()> {
        let replica = self.replica.as_ref().ok_or_else(|| io::Error::other("no replica to promote"))?;
        let mut admin = replica.admin().await.map_err(io::Error::other)?;
        redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async::<String>(&mut admin)
            .await
            .map_err(io::Error::other)?;
        Ok(())
    }

    /// Kills the primary and starts it again with the same data directory (what it kept is
    /// what its durability setting kept), and waits until it answers.
    pub async fn restart_primary(&mut self) -> io::Result<()> {
        self.primary.process.restart()?;
        self.wait_ready().await
    }

    /// The primary's endpoint.
    pub fn endpoint(&self) -> String {
        self.primary.endpoint()
    }

    /// The directory of the servers' files: `redis-primary/` and `redis-replica/` (their data
    /// directories), and their logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The primary's data directory (its AOF, if it keeps one).
    pub fn primary_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("redis-primary")
    }

    /// Waits until the primary answers PING and the replica (if any) reports its link up.
    pub async fn wait_ready(&self) -> io::Result<()> {
        let primary = &self.primary;
        let ping = || async move {
            let mut admin = primary.admin().await.map_err(io::Error::other)?;
            redis::cmd("PING").query_async::<String>(&mut admin).await.map_err(io::Error::other)
        };
        retry_until(START_BOUND, ping).await.map_err(|e| {
            io::Error::other(format!("redis primary did not start: {e}\n{}", self.primary.process.log_tail(20)))
        })?;
        if let Some(replica) = &self.replica {
            retry_until(START_BOUND, || async {
                let mut admin = replica.admin().await.map_err(io::Error::other)?;
                let info: String =
                    redis::cmd("INFO").arg("replication").query_async(&mut admin).await.map_err(io::Error::other)?;
                match info.contains("master_link_status:up") {
                    true => Ok(()),
                    false => Err(io::Error::other("the replica's link to the primary is not up")),
                }
            })
            .await
            .map_err(|e| {
                io::Error::other(format!("redis replica did not sync: {e}\n{}", replica.process.log_tail(20)))
            })?;
        }
        Ok(())
    }
}

fn start_server(
    dir: &tempfile::TempDir,
    name: &str,
    durability: Durability,
    replica_of: Option<u16>,
    tls: Option<(&crate::tls::TestCertificates, &str)>,
) -> io::Result<RedisServer> {
    let port = free_port();
    let tls_port = tls.map(|_| free_port());
    let data = dir.path().join(name);
    std::fs::create_dir_all(&data)?;
    let mut args = vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--dir".into(),
        data.display().to_string(),
        "--save".into(),
        "".into(),
        "--daemonize".into(),
        "no".into(),
        "--protected-mode".into(),
        "no".into(),
        "--loglevel".into(),
        "warning".into(),
    ];
    match durability {
        Durability::None => args.extend(["--appendonly".into(), "no".into()]),
        Durability::AppendFsyncAlways => args.extend(
            ["--appendonly", "yes", "--appendfsync", "always", "--aof-use-rdb-preamble", "no"].map(String::from),
        ),
    }
    if let Some(primary) = replica_of {
        args.extend(["--replicaof".into(), "127.0.0.1".into(), primary.to_string()]);
    }
    if let (Some((cert, password)), Some(tls_port)) = (tls, tls_port) {
        let path = |p: &std::path::Path| p.display().to_string();
        args.extend([
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&cert.server_cert),
            "--tls-key-file".into(),
            path(&cert.server_key),
            "--tls-ca-cert-file".into(),
            path(&cert.ca_cert),
            "--tls-auth-clients".into(),
            "no".into(),
            "--requirepass".into(),
            password.to_owned(),
        ]);
    }
    let log = dir.path().join(format!("{name}.log"));
    let process = ServerProcess::start(name, &server_program(), args, log)?;
    let password = tls.map(|(_, password)| password.to_owned());
    Ok(RedisServer { port, tls_port, password, process })
}
