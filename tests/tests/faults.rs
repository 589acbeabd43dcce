//! The fault-injection suite: for each backend and fault, three worker processes loop on one
//! lock against a fenced store while the fault is injected into whoever holds the lock; then
//! the checker counts violations and `docs/RELIABILITY.md` gets a row. The election rows do the
//! same with workers that campaign and resign, while an observer follows the leader; the
//! read-write lock's with workers that read (shared, fenced reads) or write at random; the
//! semaphore's with workers that take one of two permits.
//!
//! ```text
//! cargo test -p distlock-tests --test faults                      # the short run (4 s per fault)
//! DISTLOCK_FAULT_SECONDS=72 cargo test --release -p distlock-tests --test faults -- --nocapture
//!                                                                 # a long run (72 s per fault)
//! ```
//!
//! It fails if any run breaks check (1) token order, (2) lost updates, (4) owner mismatch or
//! (6) leftovers, or shows an overlap with no fault injected. It writes `docs/RELIABILITY.md`
//! (or `DISTLOCK_FAULT_REPORT`). `DISTLOCK_FAULT_ONLY=zookeeper` (a substring of
//! `backend:recipe:fault`) runs a subset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use distlock_core::conformance::Harness;
use distlock_tests::checker::{check, GrantRule, QueueReplay, Verdict};
use distlock_tests::fenced_store::FencedStore;
use distlock_tests::history::{self, Event};
use distlock_tests::redis_server::Durability;
use distlock_tests::{
    EtcdCluster, EtcdHarness, ProxyMode, ProxySet, RedisDeployment, RedisHarness, ZkEnsemble, ZkHarness,
};
use tokio::process::{Child, Command};

const WORKERS: u32 = 3;
const LOCK: &str = "fault/counter";

/// What the workers take turns with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recipe {
    Lock,
    Election,
    ReadWrite,
    /// A semaphore of [`PERMITS`] permits.
    Semaphore,
}

/// The semaphore rows' permits: fewer than the workers, so that one of them waits.
const PERMITS: usize = 2;

impl Recipe {
    const ALL: [Recipe; 4] = [Recipe::Lock, Recipe::Election, Recipe::ReadWrite, Recipe::Semaphore];

    fn label(self) -> &'static str {
        match self {
            Recipe::Lock => "lock",
            Recipe::Election => "election",
            Recipe::ReadWrite => "read-write lock",
            Recipe::Semaphore => "semaphore (2 permits)",
        }
    }

    /// The checker's statement of who may hold.
    fn rule(self) -> GrantRule {
        match self {
            Recipe::Lock | Recipe::Election => GrantRule::Exclusive,
            Recipe::ReadWrite => GrantRule::ReadWrite,
            Recipe::Semaphore => GrantRule::Permits(PERMITS),
        }
    }

    /// The worker's `DISTLOCK_WORKER_RECIPE`.
    fn worker_recipe(self) -> String {
        match self {
            Recipe::Lock => "lock".into(),
            Recipe::Election => "election".into(),
            Recipe::ReadWrite => "read-write".into(),
            Recipe::Semaphore => format!("permits={PERMITS}"),
        }
    }

    /// Where the queue of `LOCK` lives in `namespace`: an etcd key prefix, a ZooKeeper directory,
    /// a Redis sorted set (the backends' own layouts).
    fn queue(self, backend: &str, namespace: &str) -> String {
        match (backend, self) {
            ("redis", _) => {
                let recipe = match self {
                    Recipe::Lock => distlock_core::backend::Recipe::Lock,
                    Recipe::Election => distlock_core::backend::Recipe::Election,
                    Recipe::ReadWrite => distlock_core::backend::Recipe::Read,
                    Recipe::Semaphore => distlock_core::backend::Recipe::Permit(std::num::NonZeroU32::MIN),
                };
                distlock_redis::layout::queue_key(namespace, distlock_redis::layout::queue_kind(recipe), LOCK)
            }
            ("etcd", Recipe::ReadWrite) => distlock_etcd::layout::read_write_prefix(namespace, LOCK),
            ("etcd", Recipe::Semaphore) => distlock_etcd::layout::semaphore_prefix(namespace, LOCK),
            ("etcd", _) => format!("{namespace}/{LOCK}/"),
            _ => format!("{namespace}/{LOCK}"),
        }
    }

    /// The faults each recipe runs under: every one for the lock; for the election, those that
    /// end or freeze a leader, expire a candidate, or take the servers away.
    fn faults(self) -> &'static [Fault] {
        match self {
            Recipe::Lock => &Fault::ALL,
            Recipe::Election => &[
                Fault::None,
                Fault::HolderSigkill,
                Fault::HolderSigstop,
                Fault::WaiterCut,
                Fault::ServerRestart,
                Fault::LeaderKill,
            ],
            // Those that end, freeze or cut off a holder, expire a waiter, cancel waits at the
            // grant or lose a reply: each a way for a reader, a writer or a permit to be held
            // twice or leaked.
            Recipe::ReadWrite | Recipe::Semaphore => &[
                Fault::None,
                Fault::HolderSigkill,
                Fault::HolderSigstop,
                Fault::HolderCut,
                Fault::WaiterCut,
                Fault::CancelAtGrant,
                Fault::ReleaseReplyDropped,
            ],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    HolderSigkill,
    HolderSigstop,
    HolderCut,
    Blip,
    WaiterCut,
    CancelAtGrant,
    CreateReplyDropped,
    ReleaseReplyDropped,
    ServerRestart,
    LeaderKill,
    AllDownAndBack,
    LeaderPartitioned,
}

impl Fault {
    const ALL: [Fault; 13] = [
        Fault::None,
        Fault::HolderSigkill,
        Fault::HolderSigstop,
        Fault::HolderCut,
        Fault::Blip,
        Fault::WaiterCut,
        Fault::CancelAtGrant,
        Fault::CreateReplyDropped,
        Fault::ReleaseReplyDropped,
        Fault::ServerRestart,
        Fault::LeaderKill,
        Fault::AllDownAndBack,
        Fault::LeaderPartitioned,
    ];

    fn label(self) -> &'static str {
        match self {
            Fault::None => "no fault",
            Fault::HolderSigkill => "holder SIGKILL",
            Fault::HolderSigstop => "holder SIGSTOP > TTL, then SIGCONT",
            Fault::HolderCut => "holder cut off > TTL (proxy)",
            Fault::Blip => "holder blip < TTL (proxy)",
            Fault::WaiterCut => "waiter cut off > TTL: its session expires while it waits",
            Fault::CancelAtGrant => "waits cancelled around the moment of grant",
            Fault::CreateReplyDropped => "reply to a waiter's create/Txn dropped",
            Fault::ReleaseReplyDropped => "reply to the holder's release dropped",
            Fault::ServerRestart => "server restart (Redis: appendfsync always)",
            Fault::LeaderKill => "leader killed (3 nodes)",
            Fault::AllDownAndBack => "whole cluster down and back (3 nodes)",
            Fault::LeaderPartitioned => "leader partitioned from the other members for 2×TTL (3 nodes)",
        }
    }

    /// The shortest run that still sees the lock handed on after the fault: the cluster-wide
    /// faults keep the servers unusable for 3 to 4 s. Dropping a waiter's create reply needs a
    /// worker caught in its 0–50 ms between a release and its next queuing, and a guess that
    /// misses costs up to 600 ms: the injection window (a third of the run) gets room for
    /// several guesses. A semaphore's killed holder's permit comes back only after its session
    /// expires (2 s), and must be seen back, in use, before the run ends.
    fn min_seconds(self, recipe: Recipe) -> u64 {
        match (self, recipe) {
            (Fault::AllDownAndBack | Fault::LeaderPartitioned | Fault::CreateReplyDropped, _) => 7,
            (Fault::HolderSigkill, Recipe::Semaphore) => 7,
            _ => 0,
        }
    }

    /// How many servers the fault needs.
    fn cluster_size(self) -> usize {
        match self {
            Fault::LeaderKill | Fault::AllDownAndBack | Fault::LeaderPartitioned => 3,
            _ => 1,
        }
    }
}

/// The servers of one run, and what the suite needs of them.
enum Servers {
    Etcd(EtcdCluster),
    Zk(ZkEnsemble),
    /// One primary with `appendonly yes` and `appendfsync always` (docs/redis.md: what Redis
    /// keeps across a restart only so).
    Redis(Box<RedisDeployment>),
}

impl Servers {
    async fn start(backend: &str, fault: Fault) -> Servers {
        let size = fault.cluster_size();
        match (backend, fault == Fault::LeaderPartitioned) {
            ("redis", _) => {
                assert_eq!(size, 1, "Redis runs take one server");
                Servers::Redis(Box::new(
                    RedisDeployment::start(false, Durability::AppendFsyncAlways).await.expect("redis"),
                ))
            }
            ("etcd", false) => Servers::Etcd(EtcdCluster::start(size).await.expect("etcd")),
            ("etcd", true) => Servers::Etcd(EtcdCluster::start_partitionable(size).await.expect("etcd")),
            (_, false) => Servers::Zk(ZkEnsemble::start(size).await.expect("zookeeper")),
            (_, true) => Servers::Zk(ZkEnsemble::start_partitionable(size).await.expect("zookeeper")),
        }
    }

    /// The leader cut off from the other members (not from clients) for `cut`, then healed; its
    /// index.
    async fn partition_leader(&mut self, cut: Duration) -> usize {
        match self {
            Servers::Etcd(c) => {
                let leader = c.leader().await.unwrap_or(0);
                c.isolate(leader).expect("isolate the etcd leader");
                tokio::time::sleep(cut).await;
                c.heal();
                c.wait_ready().await.expect("etcd healed");
                leader
            }
            Servers::Zk(e) => {
                let leader = e.leader().await.unwrap_or(0);
                e.isolate(leader).expect("isolate the zookeeper leader");
                tokio::time::sleep(cut).await;
                e.heal();
                e.wait_ready().await.expect("zookeeper healed");
                leader
            }
            Servers::Redis(_) => unreachable!("no cluster faults on Redis"),
        }
    }

    async fn kill_leader(&mut self) {
        match self {
            Servers::Etcd(c) => {
                let leader = c.leader().await.unwrap_or(0);
                c.members[leader].process.kill();
                c.wait_writable().await.expect("a new etcd leader");
            }
            Servers::Zk(e) => {
                let leader = e.leader().await.unwrap_or(0);
                e.members[leader].process.kill();
            }
            Servers::Redis(_) => unreachable!("no cluster faults on Redis"),
        }
    }

    /// Every member down for `down`, then all back.
    async fn all_down_and_back(&mut self, down: Duration) {
        match self {
            Servers::Etcd(c) => {
                c.members.iter_mut().for_each(|m| m.process.kill());
                tokio::time::sleep(down).await;
                for m in &mut c.members {
                    m.process.restart().expect("restart");
                }
                c.wait_ready().await.expect("etcd back");
            }
            Servers::Zk(e) => {
                e.members.iter_mut().for_each(|m| m.process.kill());
                tokio::time::sleep(down).await;
                for m in &mut e.members {
                    m.process.restart().expect("restart");
                }
                e.wait_ready().await.expect("zookeeper back");
            }
            Servers::Redis(_) => unreachable!("no cluster faults on Redis"),
        }
    }

    fn endpoints(&self) -> Vec<String> {
        match self {
            Servers::Etcd(c) => c.endpoints(),
            Servers::Zk(e) => e.endpoints(),
            Servers::Redis(r) => vec![r.endpoint()],
        }
    }

    async fn restart(&mut self) {
        match self {
            Servers::Etcd(c) => {
                c.members[0].process.restart().expect("restart");
                c.wait_ready().await.expect("etcd back");
            }
            Servers::Zk(e) => {
                e.members[0].process.restart().expect("restart");
                e.wait_ready().await.expect("zookeeper back");
            }
            Servers::Redis(r) => r.restart_primary().await.expect("redis back"),
        }
    }
}

struct Worker {
    child: Child,
    proxies: ProxySet,
    history: PathBuf,
}

/// The worker holding the lock now, from the histories' last events.
fn holder(workers: &[Worker]) -> Option<usize> {
    workers.iter().position(|w| {
        let entries = history::read(std::slice::from_ref(&w.history));
        let last = entries.iter().rev().find(|e| !matches!(e.event, Event::Lost { .. }));
        matches!(last.map(|e| &e.event), Some(Event::AcquireOk { .. } | Event::Read { .. } | Event::Write { .. }))
    })
}

/// A worker waiting for the lock now (its last event is an acquire-invoke).
fn waiter(workers: &[Worker]) -> Option<usize> {
    workers.iter().position(|w| {
        let entries = history::read(std::slice::from_ref(&w.history));
        matches!(entries.last().map(|e| &e.event), Some(Event::AcquireInvoke))
    })
}

/// A worker that has just released (its next step is to queue again).
fn releaser(workers: &[Worker]) -> Option<usize> {
    workers.iter().position(|w| {
        let entries = history::read(std::slice::from_ref(&w.history));
        matches!(entries.last().map(|e| &e.event), Some(Event::ReleaseOk { .. }))
    })
}

fn signal(child: &Child, signal: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
}

/// The tokens `rule` ever granted, and the most keys one lease had in the queue at once, from
/// etcd's own revision history of the prefix (replayed by a watch from revision 1 until the
/// stream goes quiet).
async fn etcd_queue_replay(endpoints: &[String], prefix: &str, rule: GrantRule) -> Option<QueueReplay> {
    use distlock_etcd::etcd_client::{EventType, WatchOptions};
    let mut stream = None;
    for endpoint in endpoints {
        // One member at a time: after a leader kill, one of them is down.
        let Ok(mut client) = distlock_tests::etcd::connect(std::slice::from_ref(endpoint)).await else { continue };
        let options = WatchOptions::new().with_prefix().with_start_revision(1);
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(3), client.watch(prefix, Some(options))).await {
            stream = Some(s);
            break;
        }
    }
    let mut stream = stream?;
    // create revision -> (key, lease)
    let mut queue: BTreeMap<i64, (Vec<u8>, i64)> = BTreeMap::new();
    let mut replay = QueueReplay::default();
    while let Ok(Ok(Some(response))) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => {
                    queue.insert(kv.create_revision(), (kv.key().to_vec(), kv.lease()));
                    let of_lease = queue.values().filter(|(_, lease)| *lease == kv.lease()).count();
                    replay.most_entries_of_one_session = replay.most_entries_of_one_session.max(of_lease);
                }
                EventType::Delete => queue.retain(|_, (key, _)| key.as_slice() != kv.key()),
            }
            let entries: Vec<(u64, bool)> = queue
                .iter()
                .map(|(&revision, (key, _))| (revision as u64, distlock_etcd::layout::is_reader_key(prefix, key)))
                .collect();
            replay.observe(rule, &entries);
        }
    }
    (!replay.granted.is_empty()).then_some(replay)
}

/// What an observer of the election reported during a run.
#[derive(Debug, Default)]
struct Observed {
    /// Leaders it reported (new terms and new values; "no leader" not counted).
    reports: usize,
    /// Reports of a term lower than one reported before.
    out_of_order: usize,
    /// Terms a worker was elected in that the observer never reported.
    missed: usize,
}

/// Follows the election from the test process (straight to the servers, no proxy) and keeps
/// every report. Returns once the first report (before any worker runs) is in.
async fn start_observer(url: String) -> (tokio::task::JoinHandle<()>, std::sync::Arc<std::sync::Mutex<Vec<u64>>>) {
    let terms = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let kept = terms.clone();
    let task = tokio::spawn(async move {
        let elections = distlock::connect(&url).await.expect("the observer connects");
        let mut observer = elections.observe(LOCK).await.expect("observe");
        let mut first = Some(first_tx);
        loop {
            match observer.next().await {
                Ok(leader) => {
                    if let Some(leader) = leader {
                        kept.lock().unwrap_or_else(|p| p.into_inner()).push(leader.term.get());
                    }
                    if let Some(first) = first.take() {
                        let _ = first.send(());
                    }
                }
                Err(error) if error.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(error) => panic!("the observer failed: {error}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), first_rx).await.expect("the observer's first report").ok();
    (task, terms)
}

/// Checks an observer's reports against the terms the workers were elected in.
fn observed(reported: &[u64], elected: &[u64]) -> Observed {
    let mut highest = 0;
    let mut out_of_order = 0;
    for &term in reported {
        if term < highest {
            out_of_order += 1;
        }
        highest = highest.max(term);
    }
    let seen: std::collections::BTreeSet<u64> = reported.iter().copied().collect();
    let missed = elected.iter().filter(|t| !seen.contains(t)).count();
    Observed { reports: reported.len(), out_of_order, missed }
}

struct Row {
    backend: &'static str,
    recipe: Recipe,
    fault: Fault,
    /// The election's observer (`None` for the lock).
    observed: Option<Observed>,
    injected: bool,
    verdict: Verdict,
    leftovers: usize,
    /// SIGSTOP only: from SIGCONT to the woken holder's lost event.
    loss_noticed_ms: Option<u64>,
    /// The most queue entries one session had at once, by the server's record (`None`: not read).
    most_entries_of_one_session: Option<usize>,
}

async fn run(backend: &'static str, recipe: Recipe, fault: Fault, seconds: u64, dir: &Path) -> Row {
    let seconds = seconds.max(fault.min_seconds(recipe));
    let mut servers = Servers::start(backend, fault).await;
    let endpoints = servers.endpoints();
    let harness: Box<dyn Harness> = match backend {
        "etcd" => Box::new(EtcdHarness::new(endpoints.clone()).await),
        "redis" => Box::new(RedisHarness::new(endpoints[0].clone()).await),
        _ => Box::new(ZkHarness::new(endpoints.clone()).await),
    };
    let ttl = harness.ttl();
    let namespace = match backend {
        "etcd" => format!("fault-{}", uuid::Uuid::new_v4()),
        "redis" => format!("fault-{}", uuid::Uuid::new_v4().simple()),
        _ => format!("/fault-{}", uuid::Uuid::new_v4()),
    };
    let queue = recipe.queue(backend, &namespace);
    let store = FencedStore::start().await.expect("the fenced store");
    let observer = match recipe {
        Recipe::Lock | Recipe::ReadWrite | Recipe::Semaphore => None,
        Recipe::Election => {
            let url = match backend {
                "etcd" => format!("etcd://{}/{namespace}?ttl={}s", endpoints.join(","), ttl.as_secs()),
                "redis" => format!("redis://{}?prefix={namespace}&ttl={}ms", endpoints[0], ttl.as_millis()),
                _ => format!("zk://{}{namespace}?session_timeout={}ms", endpoints.join(","), ttl.as_millis()),
            };
            Some(start_observer(url).await)
        }
    };
    let mut workers = Vec::new();
    for id in 0..WORKERS {
        let proxies = ProxySet::start(&endpoints).await.expect("proxies");
        let url = match backend {
            "etcd" => format!(
                "etcd://{}/{namespace}?ttl={}s&request_timeout=1s",
                proxies.endpoints().join(","),
                ttl.as_secs()
            ),
            "redis" => format!(
                "redis://{}?prefix={namespace}&ttl={}ms&request_timeout=1s",
                proxies.endpoints()[0],
                ttl.as_millis()
            ),
            _ => format!("zk://{}{namespace}?session_timeout={}ms", proxies.endpoints().join(","), ttl.as_millis()),
        };
        let history = dir.join(format!("{backend}-{recipe:?}-{fault:?}-{id}.jsonl"));
        let _ = std::fs::remove_file(&history);
        let mut command = Command::new(env!("CARGO_BIN_EXE_fault_worker"));
        if fault == Fault::CancelAtGrant {
            // Waits of 0–300 ms: many end right around a hand-off.
            command.env("DISTLOCK_WORKER_MAX_WAIT_MS", "300");
        }
        command.env("DISTLOCK_WORKER_RECIPE", recipe.worker_recipe());
        let child = command
            .args([
                &url,
                LOCK,
                &store.addr().to_string(),
                &history.display().to_string(),
                &id.to_string(),
                &seconds.to_string(),
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("a worker");
        workers.push(Worker { child, proxies, history });
    }

    let third = Duration::from_millis(seconds * 1000 / 3);
    tokio::time::sleep(third).await;
    let mut injected = fault == Fault::None;
    let mut deaths = BTreeMap::new();
    let mut woken: Option<(u32, u64)> = None;
    // The member cut off from the others, if any: its log may hold proposals never committed.
    let mut isolated: Option<usize> = None;
    // Keep trying to inject until the middle third of the run is over.
    let give_up = tokio::time::Instant::now() + third;
    while !injected && tokio::time::Instant::now() < give_up {
        let target = match fault {
            Fault::WaiterCut => waiter(&workers),
            Fault::CreateReplyDropped => releaser(&workers),
            _ => holder(&workers),
        };
        let Some(h) = target else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        match fault {
            Fault::None | Fault::CancelAtGrant => {}
            Fault::HolderSigkill => {
                let _ = workers[h].child.start_kill();
                deaths.insert(h as u32, distlock_tests::fenced_store::monotonic_ns());
            }
            Fault::HolderSigstop => {
                signal(&workers[h].child, libc::SIGSTOP);
                tokio::time::sleep(ttl + Duration::from_secs(1)).await;
                woken = Some((h as u32, distlock_tests::fenced_store::monotonic_ns()));
                signal(&workers[h].child, libc::SIGCONT);
            }
            Fault::HolderCut | Fault::WaiterCut => {
                workers[h].proxies.cut();
                tokio::time::sleep(ttl + Duration::from_secs(1)).await;
                workers[h].proxies.heal();
            }
            Fault::Blip => {
                workers[h].proxies.cut();
                tokio::time::sleep(ttl / 4).await;
                workers[h].proxies.heal();
            }
            Fault::CreateReplyDropped | Fault::ReleaseReplyDropped => {
                // Swallow the worker's replies until its request has visibly been applied (its
                // queue entry appears, or its hold's entry goes), then reset its connections.
                let before = leftovers(backend, &endpoints, &queue).await;
                workers[h].proxies.set_mode(ProxyMode::DropReplies);
                // Bounded well below the injection window, so that a wrong guess (the worker
                // picked as holder had just released and queued again) leaves time to retry: a
                // right one is applied within the hold's 0–200 ms.
                let bound = Duration::from_millis(600);
                let applied = distlock_core::conformance::wait_for("the request to be applied", bound, || async {
                    let now = leftovers(backend, &endpoints, &queue).await;
                    let changed = if fault == Fault::CreateReplyDropped { now > before } else { now < before };
                    if changed {
                        Ok(())
                    } else {
                        Err(())
                    }
                })
                .await;
                workers[h].proxies.reset_connections();
                if applied.is_err() {
                    continue; // the worker did something else meanwhile: try again
                }
            }
            Fault::ServerRestart => servers.restart().await,
            Fault::LeaderKill => servers.kill_leader().await,
            Fault::AllDownAndBack => servers.all_down_and_back(ttl + Duration::from_secs(1)).await,
            Fault::LeaderPartitioned => isolated = Some(servers.partition_leader(ttl * 2).await),
        }
        injected = true;
        break;
    }

    for w in &mut workers {
        if tokio::time::timeout(Duration::from_secs(seconds + 30), w.child.wait()).await.is_err() {
            let _ = w.child.start_kill();
        }
    }
    let leftovers =
        distlock_core::conformance::wait_for("the namespace to empty", ttl * 3 + Duration::from_secs(5), || async {
            let left = leftovers(backend, &endpoints, &queue).await;
            if left == 0 {
                Ok(0)
            } else {
                Err(left)
            }
        })
        .await
        .unwrap_or_else(|left| left);
    let histories: Vec<PathBuf> = workers.iter().map(|w| w.history.clone()).collect();
    let replay = match &servers {
        Servers::Etcd(_) => etcd_queue_replay(&endpoints, &queue, recipe.rule()).await,
        // Every member's log holds every committed transaction: read the longest one. A leader
        // cut off from the others logged its own proposals, which no quorum committed: its log
        // is not the ensemble's record.
        Servers::Zk(ensemble) => ensemble
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != isolated)
            .filter_map(|(_, m)| {
                distlock_tests::zk_txnlog::replay_queue(&ensemble.dir().join(&m.name), &queue, recipe.rule())
            })
            .max_by_key(|r| r.granted.len()),
        // The AOF: what each script changed, in order (appendfsync always: all of it).
        Servers::Redis(r) => distlock_tests::redis_aof::replay_queue(&r.primary_dir(), &queue, recipe.rule()),
    };
    let entries = history::read(&histories);
    let granted = replay.as_ref().map(|r| r.granted.as_slice());
    let verdict = check(recipe.rule(), &entries, &deaths, &store.log(), store.value("counter"), granted);
    let most_entries_of_one_session = replay.as_ref().map(|r| r.most_entries_of_one_session);
    // How long the paused holder took, once woken, to learn that its lock was lost.
    let loss_noticed_ms = woken.and_then(|(worker, at)| {
        entries
            .iter()
            .find(|e| e.worker == worker && e.t >= at && matches!(e.event, Event::Lost { .. }))
            .map(|e| (e.t - at) / 1_000_000)
    });
    let observed = match observer {
        None => None,
        Some((task, reported)) => {
            // The last hand-off's report may still be on its way.
            tokio::time::sleep(Duration::from_millis(500)).await;
            task.abort();
            let reported = reported.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let elected: Vec<u64> = entries
                .iter()
                .filter_map(|e| match e.event {
                    Event::AcquireOk { token, .. } => Some(token),
                    _ => None,
                })
                .collect();
            Some(observed(&reported, &elected))
        }
    };
    Row { backend, recipe, fault, observed, injected, verdict, leftovers, loss_noticed_ms, most_entries_of_one_session }
}

/// Entries left in `queue` (see [`Recipe::queue`]): keys or znodes in the queue (not the release
/// record beside it, which goes with the session that last released), members of the sorted set.
async fn leftovers(backend: &str, endpoints: &[String], queue: &str) -> usize {
    match backend {
        "redis" => {
            let count = async {
                let client = redis::Client::open(format!("redis://{}", endpoints[0]))?;
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("ZCARD").arg(queue).query_async::<usize>(&mut connection).await
            };
            count.await.unwrap_or(usize::MAX)
        }
        "etcd" => {
            let Ok(mut client) = distlock_tests::etcd::connect(endpoints).await else { return usize::MAX };
            let options = distlock_etcd::etcd_client::GetOptions::new().with_prefix().with_count_only();
            client.get(queue, Some(options)).await.map(|r| r.count() as usize).unwrap_or(usize::MAX)
        }
        _ => {
            let Ok(client) = distlock_tests::zk::connect(&endpoints.join(","), Duration::from_secs(4)).await else {
                return usize::MAX;
            };
            match client.get_children(queue).await {
                Ok((children, _)) => distlock_tests::zk_harness::lock_znodes(children).len(),
                Err(_) => 0,
            }
        }
    }
}

fn report(rows: &[Row], seconds: u64) -> String {
    let mut out = String::from(
        "# Reliability\n\nWritten by `cargo test -p distlock-tests --test faults` from its own run. Three worker \
         processes loop acquire → fenced read → sleep 0–200 ms → fenced write of value+1 → release on one lock, \
         each behind its own TCP proxy, while the fault is injected into whoever holds the lock. Single-node \
         servers (3 where it says so), TTL / session timeout 2 s. For the partition, the members' peer traffic \
         goes through proxies (etcd: one per member, telling members apart by the `X-Server-From` header of their \
         requests; ZooKeeper: one link per pair of servers and port), and the leader's is black-holed both ways \
         while clients still reach it.\n\n",
    );
    out.push_str(&format!(
        "Each run lasted {seconds} s (at least 7 s for the two cluster-wide faults, which keep the servers \
         unusable for 3 to 4 s, and for the dropped create reply, whose injection needs a worker caught \
         between a release and its next queuing and may take several guesses, and for a semaphore's killed \
         holder, whose permit comes back after its session's 2 s). The etcd, ZooKeeper and Redis runs go side by side, each on servers of its \
         own. Redis runs on one primary with `appendonly yes` and `appendfsync always` (docs/redis.md \
         says what a restart without them, or a failover, does), and has no cluster-wide rows.\n\n"
    ));
    out.push_str(
        "Checks: (1) accepted operations with a lower token than an earlier accepted one they may not follow \
                   (a reader's shared read may follow a higher reader's, nothing else may); (2) acknowledged \
                   increments missing from the final value; (3) holds that began, by the workers' histories \
                   ([acquire-ok, min(release, lost)]), while holds they may not share with were open (for the \
                   lock any, for a writer any, for a reader a writer's, for a permit two others) — must be 0 \
                   without faults, counted honestly under pauses and partitions (fencing is what keeps them \
                   harmless); (4) acquisitions whose token the server's own record never granted, by the \
                   recipe's rule applied to the queue at every revision (etcd: the revision history of the \
                   prefix; ZooKeeper: the transaction log, replayed; Redis: the append-only file, replayed): the first entry for the lock, readers \
                   before the first writer or a writer first for the read-write lock, the first two entries \
                   for the semaphore; (5) the longest time the lock (a permit) stood free while a worker \
                   waited, which must stay within TTL + 1 s (3 s) when the holder is killed or cut off; \
                   (6) entries left on the server after the run, and the most entries one session had in the \
                   queue at once by the server's record (1: one per waiter, also when the reply to its \
                   create/Txn was lost, or when its wait was cancelled and it queued again at once).\n\n",
    );
    out.push_str(
        "The read-write lock rows: each worker takes the read lock or the write lock at random; a \
         reader makes one fenced shared read (the store refuses it below the highest token a writer \
         used, and refuses a writer below any token a reader used), a writer the lock's read and \
         write. The semaphore rows: three workers take one of two permits and touch no store; the \
         bound is (3) by the histories and (4) by the server's record. When a permit holder is \
         killed, (5) also gives the time until the two survivors held both permits at once again: \
         the dead session's permit came back (within TTL + 1 s, or the run fails), not leaked.\n\n",
    );
    out.push_str(
        "The election rows: the workers campaign (value `worker-N`) and resign instead of locking and \
         releasing, their tokens are terms, and the same checks apply (a \"holder\" is the leader). Beside \
         them an observer (`observe`, straight to the servers) follows the leader: (7) counts the leaders it \
         reported, the reports of a term lower than one reported before, and the terms a worker was elected \
         in that it never reported. Reports may exceed acquisitions: a candidate whose entry became first \
         while it was cut off led by the server's record without learning it. On etcd the observer keeps the \
         queue from one watch of its keys and must miss nothing; a ZooKeeper observer (whose watches fire \
         once and carry no data) watches the leader and the next candidate, read ahead, and reads after each \
         notification, so a term that begins and ends while it is disconnected can pass unseen: counted, not \
         failed.\n\n",
    );
    out.push_str("| backend | recipe | fault | injected | store ops | acquisitions | rejected stale writes | (1) token order | (2) lost updates | (3) overlaps | (4) owner mismatch | (5) worst hand-off | (6) leftovers | (6) most entries of one session | woken holder learns of loss | (7) observer: reports / out of order / missed |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let v = &r.verdict;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ms{} | {} | {} | {} | {} |\n",
            r.backend,
            r.recipe.label(),
            r.fault.label(),
            if r.injected { "yes" } else { "NO" },
            v.operations,
            v.acquisitions,
            v.rejected_writes,
            v.token_order_violations,
            v.lost_updates,
            v.overlaps,
            v.owner_mismatches.map(|m| m.to_string()).unwrap_or_else(|| "not checked".into()),
            v.worst_handoff_ms,
            v.permits_back_ms.map(|ms| format!("; every permit held again {ms} ms after the kill")).unwrap_or_default(),
            r.leftovers,
            r.most_entries_of_one_session.map(|m| m.to_string()).unwrap_or_else(|| "not checked".into()),
            r.loss_noticed_ms.map(|ms| format!("{ms} ms after SIGCONT")).unwrap_or_else(|| "-".into()),
            r.observed
                .as_ref()
                .map(|o| format!("{} / {} / {}", o.reports, o.out_of_order, o.missed))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    out
}

fn print_row(row: &Row) {
    let v = &row.verdict;
    println!(
        "{:<9} {:<8} {:<36} acquisitions {:>4} ops {:>5} rejected {:>3} | (1) {} (2) {} (3) {} (4) {:?} (5) {} ms {:?} (6) {} / {:?} (7) {:?}",
        row.backend,
        row.recipe.label(),
        row.fault.label(),
        v.acquisitions,
        v.operations,
        v.rejected_writes,
        v.token_order_violations,
        v.lost_updates,
        v.overlaps,
        v.owner_mismatches,
        v.worst_handoff_ms,
        v.permits_back_ms,
        row.leftovers,
        row.most_entries_of_one_session,
        row.observed,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite() {
    let seconds: u64 = std::env::var("DISTLOCK_FAULT_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let report_path = std::env::var("DISTLOCK_FAULT_REPORT")
        .unwrap_or_else(|_| format!("{}/../docs/RELIABILITY.md", env!("CARGO_MANIFEST_DIR")));
    // DISTLOCK_FAULT_ONLY=zookeeper or =etcd:election narrows the run (substring of "backend:recipe:fault").
    let only = std::env::var("DISTLOCK_FAULT_ONLY").unwrap_or_default();
    let dir = distlock_tests::temp_dir("fault-histories").expect("a temp dir");
    // The backends' runs go side by side (each run has servers, ports and files of its own):
    // most of a run is waiting on TTLs and restarts, so this divides the suite's time.
    let runs = |backend: &'static str| {
        let (only, dir) = (&only, dir.path());
        async move {
            let mut rows = Vec::new();
            for recipe in Recipe::ALL {
                // Redis runs on one primary: the cluster-wide faults are etcd's and ZooKeeper's.
                let faults = recipe.faults().iter().filter(|f| backend != "redis" || f.cluster_size() == 1);
                for &fault in faults {
                    if format!("{backend}:{}:{}", recipe.label(), fault.label()).contains(only.as_str()) {
                        let row = run(backend, recipe, fault, seconds, dir).await;
                        print_row(&row);
                        rows.push(row);
                    }
                }
            }
            rows
        }
    };
    let (etcd_rows, zk_rows, redis_rows) = tokio::join!(runs("etcd"), runs("zookeeper"), runs("redis"));
    let rows: Vec<Row> = etcd_rows.into_iter().chain(zk_rows).chain(redis_rows).collect();
    let text = report(&rows, seconds);
    if let Some(parent) = Path::new(&report_path).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&report_path, text).unwrap_or_else(|e| panic!("cannot write {report_path}: {e}"));
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| {
            let v = &r.verdict;
            !r.injected
                || v.token_order_violations > 0
                || v.lost_updates > 0
                || v.owner_mismatches.unwrap_or(0) > 0
                || r.leftovers > 0
                // (6) one entry per session.
                || r.most_entries_of_one_session.unwrap_or(0) > 1
                || (r.fault == Fault::None && v.overlaps > 0)
                || v.acquisitions == 0
                // (5) liveness: a dead or cut-off holder's lock passes on within TTL + 1 s.
                || (matches!(r.fault, Fault::HolderSigkill | Fault::HolderCut) && v.worst_handoff_ms > 3_000)
                // No permit leaked: a killed holder's permit is back in use within TTL + 1 s.
                || (r.recipe == Recipe::Semaphore
                    && r.fault == Fault::HolderSigkill
                    && v.permits_back_ms.is_none_or(|ms| ms > 3_000))
                // A woken holder learns of its loss at once (its lease clock ran out while frozen).
                || (r.fault == Fault::HolderSigstop && r.loss_noticed_ms.is_none_or(|ms| ms > 1_000))
                // (7) the observer never goes back and reports leaders; on etcd (one prefix watch,
                // no reads) it sees every term. A ZooKeeper observer cannot see a term that begins
                // and ends while it is disconnected: counted, shown.
                || r.observed.as_ref().is_some_and(|o| {
                    o.out_of_order > 0 || o.reports == 0 || (r.backend == "etcd" && o.missed > 0)
                })
        })
        .map(|r| format!("{} / {} / {}", r.backend, r.recipe.label(), r.fault.label()))
        .collect();
    assert!(failed.is_empty(), "fault suite: violations in {failed:?}; see {report_path}");
    println!("fault suite: {} runs, no violations; report in {report_path}", rows.len());
}
