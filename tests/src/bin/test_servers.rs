//! Starts a single etcd and a standalone ZooKeeper through the harness, prints
//! `DISTLOCK_TEST_ETCD=...` and `DISTLOCK_TEST_ZK=...` lines, and keeps them running until its
//! standard input closes (or it is killed: the servers die with it). The test command uses it to
//! test the environment-variable path that a docker-compose setup uses.
//!
//! `--as-deployed` starts ZooKeeper's JVM with full compilation
//! ([`distlock_tests::ZkEnsemble::start_as_deployed`]), for long-lived benchmark servers
//! (`bench/peers/compare.sh`).

use std::io::Read;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let as_deployed = std::env::args().skip(1).any(|a| a == "--as-deployed");
    let zk = async {
        match as_deployed {
            true => distlock_tests::ZkEnsemble::start_as_deployed(1).await,
            false => distlock_tests::ZkEnsemble::start(1).await,
        }
    };
    let (etcd, zk) = match tokio::try_join!(distlock_tests::EtcdCluster::start(1), zk) {
        Ok(servers) => servers,
        Err(e) => {
            eprintln!("test_servers: cannot start the servers: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("DISTLOCK_TEST_ETCD={}", etcd.endpoints().join(","));
    println!("DISTLOCK_TEST_ZK={}", zk.endpoints().join(","));
    // Wait for stdin to close; the servers stop when `etcd` and `zk` drop.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    drop((etcd, zk));
    std::process::ExitCode::SUCCESS
}
