//! The election's own workloads: failover (from the leader's SIGKILL, and from its resign, to
//! the next leader's `campaign` returning) and observers (how a change reaches 1 to 1,000
//! observers, and what it costs the server). Campaign/resign cycles and hand-offs run through
//! the lock's workloads as E1, E2 and E4 ([`crate::workloads::Recipe`]).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use distlock_core::{DistributedLock, LockUrl};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::stats::Latencies;
use crate::target::{BenchClient, Kind, Target};
use crate::workloads::lock_error;

type Result<T> = std::io::Result<T>;

/// The session TTL of the leader that the failover workload kills: the bound of its failover
/// is this plus one second.
pub const FAILOVER_TTL: Duration = Duration::from_secs(2);

/// The argument that makes the bench binary a leader to be killed: `__lead KIND URL NAME`.
pub const LEAD: &str = "__lead";

/// In the child process: campaigns for `name` at `url`, prints `elected TERM` once it leads,
/// and waits to be killed.
pub async fn lead_until_killed(kind: &str, url: &str, name: &str) -> Result<()> {
    let url = LockUrl::parse(url).map_err(lock_error)?;
    let elections: Box<dyn DistributedLock> = match kind {
        "etcd" => Box::new(distlock_etcd::connect_url(&url).await.map_err(lock_error)?),
        _ => Box::new(distlock_zk::connect_url(&url).await.map_err(lock_error)?),
    };
    let leadership = elections.campaign(name, "doomed").await.map_err(lock_error)?;
    println!("elected {}", leadership.term());
    std::future::pending::<()>().await;
    Ok(())
}

/// Starts a leader in a child process and waits until it leads.
async fn start_leader(target: &Target, space: &str, name: &str) -> Result<tokio::process::Child> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([LEAD, target.kind.label(), &target.url(space, FAILOVER_TTL), name])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        Ok(Ok(Some(line))) if line.starts_with("elected") => Ok(child),
        other => Err(std::io::Error::other(format!("the leader process did not lead: {other:?}"))),
    }
}

/// `client` campaigns for `name` with `value` in a task of its own.
fn spawn_campaign(
    client: &Arc<BenchClient>,
    name: &str,
    value: &str,
) -> tokio::task::JoinHandle<Result<distlock_core::Leadership>> {
    let (client, name, value) = (client.clone(), name.to_owned(), value.to_owned());
    tokio::spawn(async move { client.locks.campaign(&name, &value).await.map_err(lock_error) })
}

/// Waits until `name`'s queue holds `entries` entries (the leader and its candidates).
async fn queued(client: &BenchClient, name: &str, entries: usize) -> Result<()> {
    let bound = Instant::now() + Duration::from_secs(30);
    loop {
        let info = client.locks.inspect(name).await.map_err(lock_error)?;
        if info.waiters.len() + usize::from(info.holder.is_some()) >= entries {
            return Ok(());
        }
        if Instant::now() > bound {
            return Err(std::io::Error::other(format!("{entries} entries never queued on {name}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Failover, `rounds` times: a leader in another process is SIGKILLed while a candidate waits;
/// the time until the candidate's `campaign` returns (bound: the TTL + 1 s). Then that leader
/// resigns while another candidate waits; the time from `resign()` being called until the
/// candidate's `campaign` returns.
pub async fn failover(target: &Target, rounds: usize) -> Result<Value> {
    let space = "bench-failover";
    let clients = target.clients(space, 2).await?;
    let (mut killed, mut resigned) = (Latencies::default(), Latencies::default());
    for round in 0..rounds {
        let name = format!("failover-{round}");
        let mut leader = start_leader(target, space, &name).await?;
        let campaign = spawn_campaign(&clients[0], &name, "first");
        queued(&clients[1], &name, 2).await?;
        let kill_at = Instant::now();
        leader.start_kill()?;
        let first = campaign.await.map_err(std::io::Error::other)??;
        killed.push(kill_at.elapsed());
        let _ = leader.wait().await;

        let campaign = spawn_campaign(&clients[1], &name, "second");
        queued(&clients[0], &name, 2).await?;
        let resign_at = Instant::now();
        first.resign().await.map_err(lock_error)?;
        let second = campaign.await.map_err(std::io::Error::other)??;
        resigned.push(resign_at.elapsed());
        second.resign().await.map_err(lock_error)?;
    }
    BenchClient::close_all(&clients).await;
    let ms = |l: &Latencies, p: f64| (l.percentile_ms(p) * 100.0).round() / 100.0;
    Ok(json!({
        "workload": "E-failover", "backend": target.kind.label(), "rounds": rounds,
        "ttl_ms": FAILOVER_TTL.as_millis() as u64,
        "bound_ms": (FAILOVER_TTL + Duration::from_secs(1)).as_millis() as u64,
        "kill_to_elected_p50_ms": ms(&killed, 50.0), "kill_to_elected_max_ms": ms(&killed, 100.0),
        "resign_to_elected_p50_ms": ms(&resigned, 50.0), "resign_to_elected_max_ms": ms(&resigned, 100.0),
    }))
}

/// Observers: `n` observers, each its own client, follow one election while two candidates
/// take turns `changes` times (each resigns once the other waits). Per change: the delay from
/// `resign()` to each observer's report of the new leader, and the server's requests and
/// notifications from the resign until every observer reported.
pub async fn observers(target: &Target, n: usize, changes: usize) -> Result<Value> {
    let space = format!("bench-observers-{n}");
    let name = "observed";
    let watchers = target.clients(&space, n).await?;
    let candidates = target.clients(&space, 2).await?;
    // Each observer's reports of a term, with when they came.
    let reports: Arc<std::sync::Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    for watcher in &watchers {
        let (watcher, reports, ready) = (watcher.clone(), reports.clone(), ready_tx.clone());
        tasks.push(tokio::spawn(async move {
            let mut observer = watcher.locks.observe(name).await.map_err(lock_error)?;
            observer.next().await.map_err(lock_error)?;
            let _ = ready.send(());
            loop {
                if let Some(leader) = observer.next().await.map_err(lock_error)? {
                    reports.lock().unwrap_or_else(|p| p.into_inner()).push((leader.term.get(), Instant::now()));
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        }));
    }
    for _ in 0..n {
        ready_rx.recv().await.ok_or_else(|| std::io::Error::other("an observer failed to start"))?;
    }
    let mut leadership = candidates[0].locks.campaign(name, "a").await.map_err(lock_error)?;
    let idle = target.idle_requests_per_s().await?;
    // Summed over the changes, each measured from just before the resign until every observer
    // reported the new leader: the next candidate's queuing (and the bench's polls for it) fall
    // outside.
    let (mut requests, mut notifications, mut client_requests) = (0.0, 0.0, 0u64);
    let mut server_cpu = Some(Duration::ZERO);
    let mut by_method = std::collections::BTreeMap::<String, f64>::new();
    let mut resigns = Vec::new();
    for change in 0..changes {
        let campaign = spawn_campaign(&candidates[(change + 1) % 2], name, "b");
        queued(&candidates[change % 2], name, 2).await?;
        let counted = BenchClient::requests_of(&candidates);
        let before = target.snapshot().await?;
        let resign_at = Instant::now();
        leadership.resign().await.map_err(lock_error)?;
        leadership = campaign.await.map_err(std::io::Error::other)??;
        resigns.push((leadership.term().get(), resign_at));
        // Every observer reports this term before the next change.
        let bound = Instant::now() + Duration::from_secs(30);
        let term = leadership.term().get();
        while reports.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|(t, _)| *t == term).count() < n {
            if Instant::now() > bound {
                return Err(std::io::Error::other(format!("not every observer reported term {term} within 30 s")));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let d = target.snapshot().await?.since(&before);
        requests += target.lock_requests(&d, idle);
        notifications += d.notifications;
        client_requests += BenchClient::requests_of(&candidates) - counted;
        server_cpu = server_cpu.zip(d.server_cpu).map(|(a, b)| a + b);
        for (method, count) in &d.by_method {
            *by_method.entry(method.clone()).or_default() += count;
        }
    }
    leadership.resign().await.map_err(lock_error)?;
    for task in tasks {
        task.abort();
    }
    let mut delays = Latencies::default();
    let reports = reports.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (term, resign_at) in &resigns {
        for (_, at) in reports.iter().filter(|(t, _)| t == term) {
            delays.push(at.saturating_duration_since(*resign_at));
        }
    }
    BenchClient::close_all(&watchers).await;
    BenchClient::close_all(&candidates).await;
    let c = changes as f64;
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "workload": "E-observers", "backend": target.kind.label(), "observers": n, "changes": changes,
        "delay_p50_ms": round2(delays.percentile_ms(50.0)), "delay_p99_ms": round2(delays.percentile_ms(99.0)),
        "delay_max_ms": round2(delays.percentile_ms(100.0)),
        "server_requests_per_change": round2(requests / c),
        "candidate_requests_per_change": round2(client_requests as f64 / c),
        "notifications_per_change": round2(notifications / c),
        "notifications_per_observer_per_change": round2(notifications / c / n as f64),
        "server_cpu_us_per_change": server_cpu.map(|cpu| (cpu.as_secs_f64() * 1e6 / c).round()),
        "by_method_per_change": by_method.iter().map(|(m, v)| (m.clone(), json!(round2(v / c)))).collect::<serde_json::Map<_, _>>(),
        "kind": match target.kind { Kind::Etcd => "one prefix watch per observer", Kind::Zk => "a watch on the leader's znode per observer", Kind::Redis => "a subscription to the leader's channel per observer" },
    }))
}
