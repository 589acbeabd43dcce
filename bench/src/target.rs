//! What a workload runs against: a backend's servers (started through the test harness, or
//! given by address), clients of it, its server-side counters, and the raw floor (the bare
//! writes a lock cycle cannot go below).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use distlock_core::backend::LockBackend;
use distlock_core::{DistributedLock, LockClient};
use distlock_etcd::EtcdBackend;
use distlock_redis::RedisBackend;
use distlock_tests::redis_server::Durability;
use distlock_tests::zk::four_letter;
use distlock_tests::{EtcdCluster, RedisDeployment, ZkEnsemble};
use distlock_zk::ZkBackend;
use tokio::time::Instant;

use crate::metrics::EtcdRequests;
use crate::stats::{own_cpu, Latencies, ProcessCpu};

/// The backends the bench knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Etcd,
    Zk,
    Redis,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Zk => "zookeeper",
            Kind::Redis => "redis",
        }
    }
}

/// Servers the bench started (stopped on drop), or ones it was given.
#[allow(dead_code)] // held for their Drop
enum Servers {
    Etcd(EtcdCluster),
    Zk(ZkEnsemble),
    Redis(Box<RedisDeployment>),
    Given,
}

/// One backend's servers.
pub struct Target {
    pub kind: Kind,
    endpoints: Vec<String>,
    pids: Vec<u32>,
    /// Redis only: the replicas each client waits for (`replicas=N`), set by
    /// [`Target::waiting_for_replicas`] whoever started the servers.
    redis_replicas: u32,
    _servers: Servers,
}

/// One lock client (one session) and its own request counter.
pub struct BenchClient {
    pub locks: Arc<dyn DistributedLock>,
    requests: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl BenchClient {
    /// A client whose requests its backend's `requests` counts.
    fn counted<B: LockBackend>(locks: LockClient<B>, requests: fn(&B) -> u64) -> Self {
        let locks = Arc::new(locks);
        let counted = locks.clone();
        BenchClient { locks, requests: Arc::new(move || requests(counted.backend())) }
    }

    /// Requests this client has sent, as it counts them.
    pub fn requests(&self) -> u64 {
        (self.requests)()
    }

    /// Ends the client's session and waits for the server to confirm, so that nothing of a
    /// workload's clients is left for the next workload to meet.
    pub async fn close(&self) {
        if let Err(error) = self.locks.close().await {
            eprintln!("closing a bench client was not confirmed: {error}");
        }
    }

    /// Closes every client of a workload.
    pub async fn close_all(clients: &[Arc<BenchClient>]) {
        for client in clients {
            client.close().await;
        }
    }

    /// Requests all of `clients` have sent, as they count them.
    pub fn requests_of(clients: &[Arc<BenchClient>]) -> u64 {
        clients.iter().map(|c| c.requests()).sum()
    }
}

/// Server-side counters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Lock requests: etcd's gRPC requests (not keepalives) plus watches created; ZooKeeper's
    /// packets received (every request and ping); Redis's commands from clients (scripts, SET,
    /// DEL, SUBSCRIBE; keepalives are scripts too).
    pub requests: f64,
    /// etcd only: by gRPC method.
    pub by_method: BTreeMap<String, f64>,
    /// Watch notifications the server sent (Redis: messages published).
    pub notifications: f64,
    /// etcd only: keepalive messages received.
    pub keepalives: f64,
    /// CPU time of the server processes (when the bench started them), read before the
    /// counters were, and after: what the server spent answering the read itself is left out
    /// of every difference.
    pub server_cpu: Option<(ProcessCpu, ProcessCpu)>,
    pub at: Instant,
}

/// The difference between two snapshots.
#[derive(Debug, Clone)]
pub struct Delta {
    pub requests: f64,
    pub by_method: BTreeMap<String, f64>,
    pub notifications: f64,
    pub keepalives: f64,
    pub server_cpu: Option<Duration>,
    pub elapsed: Duration,
}

impl Snapshot {
    pub fn since(&self, before: &Snapshot) -> Delta {
        let by_method = self
            .by_method
            .iter()
            .map(|(m, v)| (m.clone(), v - before.by_method.get(m).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        Delta {
            requests: self.requests - before.requests,
            by_method,
            notifications: self.notifications - before.notifications,
            keepalives: self.keepalives - before.keepalives,
            server_cpu: self.server_cpu.zip(before.server_cpu).map(|((now, _), (_, then))| now.since(&then)),
            elapsed: self.at - before.at,
        }
    }
}

/// The raw floor: one bare write of a key and its delete, in a loop.
#[derive(Debug, Clone)]
pub struct Floor {
    cycles: usize,
    elapsed: Duration,
    latencies: Latencies,
    /// The client's CPU time: what the bare client library costs.
    client_cpu: Duration,
}

impl Floor {
    /// Two runs of the floor as one.
    pub fn and(mut self, other: Floor) -> Floor {
        self.cycles += other.cycles;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.client_cpu += other.client_cpu;
        self
    }

    pub fn cycles(&self) -> usize {
        self.cycles
    }

    pub fn cycles_per_s(&self) -> f64 {
        self.cycles as f64 / self.elapsed.as_secs_f64()
    }

    pub fn cycle_p50_ms(&self) -> f64 {
        self.latencies.percentile_ms(50.0)
    }

    pub fn client_cpu_us_per_cycle(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / self.cycles as f64
    }
}

impl Target {
    /// Starts a single server of `kind` through the test harness (Redis: with a replica if
    /// `redis_replicas` is 1; the clients wait for it once told so by
    /// [`Target::waiting_for_replicas`]).
    pub async fn start(kind: Kind, redis_replicas: u32) -> io::Result<Self> {
        match kind {
            Kind::Etcd => {
                let cluster = EtcdCluster::start(1).await?;
                let pids = cluster.members.iter().filter_map(|m| m.process.pid()).collect();
                Ok(Target {
                    kind,
                    endpoints: cluster.endpoints(),
                    pids,
                    redis_replicas: 0,
                    _servers: Servers::Etcd(cluster),
                })
            }
            Kind::Zk => {
                // The tests' C1-only JVM: a fresh JVM with full compilation (as deployed) spends
                // its first minutes compiling, at about twice the server CPU per operation in a
                // run of this length (measured); `compare.sh` uses a long-lived one instead.
                let ensemble = ZkEnsemble::start(1).await?;
                let pids = ensemble.members.iter().filter_map(|m| m.process.pid()).collect();
                Ok(Target {
                    kind,
                    endpoints: ensemble.endpoints(),
                    pids,
                    redis_replicas: 0,
                    _servers: Servers::Zk(ensemble),
                })
            }
            Kind::Redis => {
                // As the peers were measured: Redis 7.0 from Debian, no persistence; with a
                // replica when the clients wait for one.
                if redis_replicas > 1 {
                    return Err(io::Error::other("the bench starts one replica: give --redis of a primary with more"));
                }
                let deployment = RedisDeployment::start(redis_replicas == 1, Durability::None).await?;
                let pids = deployment.primary.process.pid().into_iter().collect();
                Ok(Target {
                    kind,
                    endpoints: vec![deployment.endpoint()],
                    pids,
                    redis_replicas: 0,
                    _servers: Servers::Redis(Box::new(deployment)),
                })
            }
        }
    }

    /// Servers already running at `endpoint` (`host:port`); their CPU time is not measured.
    pub fn given(kind: Kind, endpoint: String) -> Self {
        Target { kind, endpoints: vec![endpoint], pids: Vec::new(), redis_replicas: 0, _servers: Servers::Given }
    }

    /// Redis only: each client waits for `replicas` replicas to acknowledge its grants,
    /// releases and renewals (`replicas=N`).
    pub fn waiting_for_replicas(mut self, replicas: u32) -> Self {
        self.redis_replicas = replicas;
        self
    }

    /// A new client (its own session). `space` separates workloads: the etcd key prefix or the
    /// ZooKeeper chroot.
    pub async fn client(&self, space: &str) -> io::Result<BenchClient> {
        let failed = |e: distlock_core::LockError| io::Error::other(e.to_string());
        match self.kind {
            Kind::Etcd => {
                let locks = EtcdBackend::builder()
                    .endpoints(self.endpoints.iter().cloned())
                    .prefix(space)
                    .ttl(Duration::from_secs(30))
                    .connect()
                    .await
                    .map_err(failed)?;
                Ok(BenchClient::counted(locks, |b| b.requests()))
            }
            Kind::Zk => {
                let locks = ZkBackend::builder()
                    .hosts(self.endpoints.iter().cloned())
                    .chroot(format!("/{space}"))
                    .session_timeout(Duration::from_secs(30))
                    .connect()
                    .await
                    .map_err(failed)?;
                Ok(BenchClient::counted(locks, |b| b.requests()))
            }
            Kind::Redis => {
                let locks = RedisBackend::builder()
                    .address(self.endpoints[0].clone())
                    .prefix(space)
                    .ttl(Duration::from_secs(30))
                    .replicas(self.redis_replicas)
                    .connect()
                    .await
                    .map_err(failed)?;
                Ok(BenchClient::counted(locks, |b| b.requests()))
            }
        }
    }

    /// The URL of a client in `space` with session TTL `ttl`, for a client in another process.
    pub fn url(&self, space: &str, ttl: Duration) -> String {
        let ms = ttl.as_millis();
        match self.kind {
            Kind::Etcd => format!("etcd://{}/{space}?ttl={ms}ms", self.endpoints.join(",")),
            Kind::Zk => format!("zk://{}/{space}?session_timeout={ms}ms", self.endpoints.join(",")),
            Kind::Redis => format!(
                "redis://{}?prefix={}&ttl={ms}ms&replicas={}",
                self.endpoints[0],
                space.replace('/', "-"),
                self.redis_replicas
            ),
        }
    }

    /// `n` clients, connected a few at a time.
    pub async fn clients(&self, space: &str, n: usize) -> io::Result<Vec<Arc<BenchClient>>> {
        let mut out = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
            let connects = chunk.iter().map(|_| self.client(space));
            for c in futures::future::join_all(connects).await {
                out.push(Arc::new(c?));
            }
        }
        Ok(out)
    }

    /// The servers' counters now.
    pub async fn snapshot(&self) -> io::Result<Snapshot> {
        let cpu_before_read = (!self.pids.is_empty()).then(|| ProcessCpu::read(&self.pids));
        let cpu_after_read = || cpu_before_read.map(|before| (before, ProcessCpu::read(&self.pids)));
        let endpoint = &self.endpoints[0];
        match self.kind {
            Kind::Etcd => {
                let r = EtcdRequests::read(endpoint).await?;
                Ok(Snapshot {
                    requests: r.lock_requests_since(&EtcdRequests::default()),
                    by_method: r.by_method_since(&EtcdRequests::default()),
                    notifications: r.watch_events_sent,
                    keepalives: r.keepalive_messages,
                    server_cpu: cpu_after_read(),
                    at: Instant::now(),
                })
            }
            Kind::Zk => {
                let mntr = four_letter(endpoint, "mntr").await?;
                let value = |name: &str| -> f64 {
                    mntr.lines()
                        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix('\t')))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0.0)
                };
                let notifications = ["created", "deleted", "children", "changed"]
                    .iter()
                    .map(|k| value(&format!("zk_sum_node_{k}_watch_count")))
                    .sum();
                Ok(Snapshot {
                    requests: value("zk_packets_received"),
                    by_method: BTreeMap::new(),
                    notifications,
                    keepalives: 0.0,
                    server_cpu: cpu_after_read(),
                    at: Instant::now(),
                })
            }
            Kind::Redis => {
                let stats = crate::metrics::RedisCommands::read(endpoint).await?;
                Ok(Snapshot {
                    requests: stats.client_commands(),
                    by_method: stats.by_command.clone(),
                    notifications: stats.published,
                    keepalives: 0.0,
                    server_cpu: cpu_after_read(),
                    at: Instant::now(),
                })
            }
        }
    }

    /// Requests per second the server receives from idle clients (ZooKeeper pings and the
    /// backend's lease-clock probes, which `mntr` counts with the rest; Redis's keepalive
    /// scripts; etcd's keepalives are counted apart, so 0 there). Each `mntr` or `INFO` is itself
    /// one request.
    pub async fn idle_requests_per_s(&self) -> io::Result<f64> {
        if self.kind == Kind::Etcd {
            return Ok(0.0);
        }
        let before = self.snapshot().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let d = self.snapshot().await?.since(&before);
        Ok(((d.requests - 1.0) / d.elapsed.as_secs_f64()).max(0.0))
    }

    /// Requests the lock used between two snapshots: less the idle rate and the snapshot's own
    /// packet (ZooKeeper).
    pub fn lock_requests(&self, d: &Delta, idle_per_s: f64) -> f64 {
        match self.kind {
            Kind::Etcd => d.requests,
            Kind::Zk | Kind::Redis => (d.requests - 1.0 - idle_per_s * d.elapsed.as_secs_f64()).max(0.0),
        }
    }

    /// The raw floor: `cycles` bare put+delete (etcd), create+delete (ZooKeeper) or
    /// `SET NX PX` + `DEL` (Redis) of one key.
    pub async fn raw_floor(&self, cycles: usize) -> io::Result<Floor> {
        let mut latencies = Latencies::default();
        // Timed from after the connect.
        let (started, cpu): (Instant, Duration);
        match self.kind {
            Kind::Etcd => {
                let mut client = distlock_tests::etcd::connect(&self.endpoints)
                    .await
                    .map_err(|e| io::Error::other(e.to_string()))?;
                (started, cpu) = (Instant::now(), own_cpu());
                for _ in 0..cycles {
                    let t = Instant::now();
                    client.put("bench-floor/key", "", None).await.map_err(|e| io::Error::other(e.to_string()))?;
                    client.delete("bench-floor/key", None).await.map_err(|e| io::Error::other(e.to_string()))?;
                    latencies.push(t.elapsed());
                }
            }
            Kind::Zk => {
                let client = distlock_tests::zk::connect(&self.endpoints.join(","), Duration::from_secs(30))
                    .await
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let options = zookeeper_client::CreateMode::Ephemeral.with_acls(zookeeper_client::Acls::anyone_all());
                (started, cpu) = (Instant::now(), own_cpu());
                for _ in 0..cycles {
                    let t = Instant::now();
                    client.create("/bench-floor", b"", &options).await.map_err(|e| io::Error::other(e.to_string()))?;
                    client.delete("/bench-floor", None).await.map_err(|e| io::Error::other(e.to_string()))?;
                    latencies.push(t.elapsed());
                }
            }
            Kind::Redis => {
                let failed = |e: redis::RedisError| io::Error::other(e.to_string());
                let client = redis::Client::open(format!("redis://{}", self.endpoints[0])).map_err(failed)?;
                let mut connection = client.get_multiplexed_async_connection().await.map_err(failed)?;
                (started, cpu) = (Instant::now(), own_cpu());
                for _ in 0..cycles {
                    let t = Instant::now();
                    let mut set = redis::cmd("SET");
                    set.arg("bench-floor").arg("1").arg("NX").arg("PX").arg(30_000);
                    set.query_async::<Option<String>>(&mut connection).await.map_err(failed)?;
                    redis::cmd("DEL").arg("bench-floor").query_async::<i64>(&mut connection).await.map_err(failed)?;
                    latencies.push(t.elapsed());
                }
            }
        }
        Ok(Floor { cycles, elapsed: started.elapsed(), latencies, client_cpu: own_cpu() - cpu })
    }
}
