//! # distlock-tests
//!
//! The harness that runs real etcd, ZooKeeper and Redis servers for distlock's tests, never
//! mocks: single nodes and 3-node clusters on free loopback ports in temporary directories
//! ([`EtcdCluster`], [`ZkEnsemble`], [`RedisDeployment`]); member control (SIGKILL, SIGSTOP/SIGCONT, restart); a
//! [`TcpProxy`] that cuts, black-holes or delays connections; test certificates for TLS servers
//! ([`tls`]); and servers shared by all tests of one test binary ([`shared`]), which
//! `DISTLOCK_TEST_ETCD` / `DISTLOCK_TEST_ZK` can replace with servers already running.
//!
//! Every server process is stopped when its handle drops (also while a test panics) and, through
//! `PR_SET_PDEATHSIG`, when the test binary exits, however it exits.

pub mod checker;
pub mod cli;
pub mod etcd;
pub mod etcd_harness;
pub mod fenced_store;
pub mod history;
pub mod peer_net;
pub mod peer_process;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod redis_aof;
pub mod redis_harness;
pub mod redis_server;
pub mod scenarios;
pub mod shared;
pub mod tls;
pub mod zk;
pub mod zk_harness;
pub mod zk_txnlog;

pub use etcd::EtcdCluster;
pub use etcd_harness::EtcdHarness;
pub use peer_net::PeerNet;
pub use process::ServerProcess;
pub use proxy::{ProxyMode, ProxyOptions, ProxySet, TcpProxy};
pub use redis_harness::RedisHarness;
pub use redis_server::RedisDeployment;
pub use zk::ZkEnsemble;
pub use zk_harness::ZkHarness;

use std::future::Future;
use std::time::Duration;

/// With `RUST_LOG` set, prints the library's traces in each test's captured output (shown when
/// the test fails): `RUST_LOG=distlock_zk=debug,zookeeper_client=debug cargo test ...`. The
/// harnesses call it; a no-op without `RUST_LOG` or once a subscriber is installed.
pub fn trace_from_env() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
}

/// Retries `attempt` until it succeeds or `bound` passes; returns the last error on time-out.
pub async fn retry_until<T, E, F, Fut>(bound: Duration, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Sends `request` to `endpoint` and reads the answer until the server closes the connection,
/// within 2 s: ZooKeeper's four-letter words, a plain HTTP/1.0 GET of etcd's `/metrics`.
pub async fn ask(endpoint: &str, request: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(endpoint).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.map_err(|_| {
        let what = request.lines().next().unwrap_or_default();
        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} to {endpoint} timed out"))
    })?
}

/// A directory for one server's files, under the system temp dir, named so that stray
/// processes of ours can be recognised (`distlock-test-*`).
pub fn temp_dir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(&format!("distlock-test-{prefix}-")).tempdir()
}
