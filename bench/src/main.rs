//! distlock benchmarks: the cost of a lock in server round trips and time. Each workload prints
//! one JSON line.
//!
//! ```text
//! cargo run --release -p distlock-bench -- [WORKLOAD...] [--backends etcd,zookeeper,redis]
//!     [--etcd HOST:PORT] [--zk HOST:PORT] [--redis HOST:PORT] [--redis-replicas N] [--cycles 1000]
//!     [--rounds 5] [--seconds 5]
//!     [--clients 2,8,32] [--pause-ms 3] [--waiters 1,10,100,1000] [--many 10000] [--tasks 100]
//!     [--warmup SECONDS] [--runtime multi-thread|current-thread] [--report docs/BENCHMARKS.md]
//!     [--recorder]
//! ```
//!
//! Workloads: `floor`, `w1` (uncontended; run in `--rounds` rounds, each with half the floor's
//! cycles before W1's and half after, and the round with the median floor ratio is printed,
//! with every round's ratio), `w2`
//! (contended; with `--pause-ms` above 0, also 8 clients pausing at random after each release),
//! `w3` (independent), `w4` (scale: waiters queued on one lock, and one session holding many
//! locks), `w5` (local queue); the election's `e1`, `e2`, `e4` (W1, W2 and W4 with campaign
//! and resign for acquire and release), `failover` (from a leader process's SIGKILL, and from a
//! resign, to the next leader) and `observers` (1 to 1,000 observers of one election, `--observers`,
//! over `--changes` changes); none named means all. Servers: a single node of each backend
//! started through the test harness (fsync on, temp dirs, stopped at exit), or the ones given by
//! `--etcd` / `--zk`. Servers the bench started get `--warmup` seconds (default 10) of 8 clients
//! contending before anything is measured: ZooKeeper's JVM compiles its hot paths under load,
//! and the first writes grow the servers' files. Given servers get none unless asked. `--report`
//! also writes the Markdown report and `benchmarks.svg` beside it. The clients run on a Tokio
//! runtime of the `--runtime` flavour (default multi-thread), in a spawned task. `--recorder`
//! installs a metrics recorder first (Prometheus's, never read): the cost of distlock's metrics.

mod alloc;
mod election;
mod metrics;
mod report;
mod stats;
mod target;
mod workloads;

use std::time::Duration;

use serde_json::Value;
use target::{Kind, Target};
use workloads::Recipe;

/// The command line.
struct Args {
    workloads: Vec<String>,
    backends: Vec<Kind>,
    etcd: Option<String>,
    zk: Option<String>,
    redis: Option<String>,
    /// Redis only: the replicas each client waits for (`replicas=N`).
    redis_replicas: u32,
    cycles: usize,
    /// Rounds of the floor and W1, the floor's cycles split around W1's (the machine's speed drifts).
    rounds: usize,
    seconds: f64,
    clients: Vec<usize>,
    waiters: Vec<usize>,
    many: usize,
    tasks: usize,
    /// W2 also runs 8 clients pausing at random up to this many milliseconds after each
    /// release (0: not).
    pause_ms: usize,
    /// Seconds of unmeasured load first; `None`: 10 for servers the bench starts, 0 for given ones.
    warmup: Option<f64>,
    /// How many observers the observers workload runs with, in turn.
    observers: Vec<usize>,
    /// Leader changes the observers workload measures.
    changes: usize,
    /// Leaders the failover workload kills (and resignations it times).
    failovers: usize,
    report: Option<std::path::PathBuf>,
    runtime: Runtime,
    /// Whether a metrics recorder (Prometheus's, rendering nothing) is installed: the cost of
    /// distlock's metrics where an application collects them.
    recorder: bool,
}

/// The Tokio runtime the clients run on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Runtime {
    MultiThread,
    CurrentThread,
}

impl Runtime {
    fn label(self) -> &'static str {
        match self {
            Runtime::MultiThread => "multi-thread",
            Runtime::CurrentThread => "current-thread",
        }
    }
}

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

const WORKLOADS: [&str; 16] =
    ["floor", "w1", "w2", "w3", "w4", "w5", "e1", "e2", "e4", "failover", "observers", "r2", "r4", "s1", "s2", "s4"];

fn list(value: &str, flag: &str) -> Result<Vec<usize>, String> {
    value
        .split(',')
        .map(|v| v.trim().parse().map_err(|_| format!("{flag} takes numbers separated by commas, not {value:?}")))
        .collect()
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        workloads: Vec::new(),
        backends: vec![Kind::Etcd, Kind::Zk],
        etcd: None,
        zk: None,
        redis: None,
        redis_replicas: 0,
        cycles: 1000,
        rounds: 5,
        seconds: 5.0,
        clients: vec![2, 8, 32],
        waiters: vec![1, 10, 100, 1000],
        many: 10_000,
        tasks: 100,
        pause_ms: 3,
        warmup: None,
        observers: vec![1, 100, 1000],
        changes: 20,
        failovers: 5,
        report: None,
        runtime: Runtime::MultiThread,
        recorder: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{arg} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|_| format!("{arg} takes a number, not {v:?}"));
        match arg.as_str() {
            "--backends" => {
                a.backends = value()?
                    .split(',')
                    .map(|b| match b.trim() {
                        "etcd" => Ok(Kind::Etcd),
                        "zookeeper" | "zk" => Ok(Kind::Zk),
                        "redis" => Ok(Kind::Redis),
                        other => Err(format!("unknown backend {other:?}; known: etcd, zookeeper, redis")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--etcd" => a.etcd = Some(value()?),
            "--zk" => a.zk = Some(value()?),
            "--redis" => a.redis = Some(value()?),
            "--redis-replicas" => {
                let v = value()?;
                a.redis_replicas = v.parse().map_err(|_| format!("--redis-replicas takes a number, not {v:?}"))?;
            }
            "--cycles" => a.cycles = number(value()?)?,
            "--rounds" => a.rounds = number(value()?)?,
            "--seconds" => {
                let v = value()?;
                a.seconds = v.parse().map_err(|_| format!("--seconds takes a number, not {v:?}"))?
            }
            "--clients" => a.clients = list(&value()?, "--clients")?,
            "--waiters" => a.waiters = list(&value()?, "--waiters")?,
            "--many" => a.many = number(value()?)?,
            "--tasks" => a.tasks = number(value()?)?,
            "--pause-ms" => a.pause_ms = number(value()?)?,
            "--observers" => a.observers = list(&value()?, "--observers")?,
            "--changes" => a.changes = number(value()?)?,
            "--failovers" => a.failovers = number(value()?)?,
            "--warmup" => {
                let v = value()?;
                a.warmup = Some(
                    v.parse()
                        .ok()
                        .filter(|s: &f64| *s >= 0.0)
                        .ok_or_else(|| format!("--warmup takes seconds (0 or more), not {v:?}"))?,
                )
            }
            "--report" => a.report = Some(value()?.into()),
            "--recorder" => a.recorder = true,
            "--runtime" => {
                a.runtime = match value()?.as_str() {
                    "multi-thread" => Runtime::MultiThread,
                    "current-thread" => Runtime::CurrentThread,
                    other => return Err(format!("--runtime takes multi-thread or current-thread, not {other:?}")),
                }
            }
            w if WORKLOADS.contains(&w) => a.workloads.push(w.to_owned()),
            other => return Err(format!("unknown argument {other:?}; workloads: {}", WORKLOADS.join(", "))),
        }
    }
    if a.workloads.is_empty() {
        a.workloads = WORKLOADS.iter().map(|w| w.to_string()).collect();
    }
    if a.cycles == 0 || a.rounds == 0 || a.tasks == 0 || a.seconds <= 0.0 {
        return Err("--cycles, --rounds, --tasks and --seconds must be above zero".into());
    }
    if a.clients.contains(&0) || a.waiters.contains(&0) || a.observers.contains(&0) {
        return Err("--clients, --waiters and --observers take counts of 1 or more".into());
    }
    if a.changes == 0 || a.failovers == 0 {
        return Err("--changes and --failovers must be above zero".into());
    }
    Ok(a)
}

fn emit(lines: &mut Vec<Value>, line: Value) {
    println!("{line}");
    lines.push(line);
}

async fn run(args: &Args, kind: Kind, lines: &mut Vec<Value>) -> std::io::Result<()> {
    let given = match kind {
        Kind::Etcd => args.etcd.clone(),
        Kind::Zk => args.zk.clone(),
        Kind::Redis => args.redis.clone(),
    };
    let (target, warmup) = match given {
        Some(endpoint) => (Target::given(kind, endpoint), args.warmup.unwrap_or(0.0)),
        None => (Target::start(kind, args.redis_replicas).await?, args.warmup.unwrap_or(10.0)),
    };
    let target = target.waiting_for_replicas(args.redis_replicas);
    if warmup > 0.0 {
        eprintln!("distlock-bench: warming {} up for {warmup} s (not measured)", kind.label());
        workloads::contended(&target, 8, Duration::from_secs_f64(warmup), Duration::ZERO, Recipe::Lock).await?;
    }
    let wants = |w: &str| args.workloads.iter().any(|x| x == w);
    let duration = Duration::from_secs_f64(args.seconds);
    if wants("floor") || wants("w1") {
        let mut rounds = Vec::new();
        for _ in 0..args.rounds {
            let w1_cycles = wants("w1").then_some(args.cycles);
            rounds.push(workloads::floor_round(&target, args.cycles.min(1000), w1_cycles).await?);
        }
        for line in workloads::median_round(rounds) {
            emit(lines, line);
        }
    }
    if wants("w2") {
        for &n in &args.clients {
            emit(lines, workloads::contended(&target, n, duration, Duration::ZERO, Recipe::Lock).await?);
        }
        if args.pause_ms > 0 {
            let pause = Duration::from_millis(args.pause_ms as u64);
            emit(lines, workloads::contended(&target, 8, duration, pause, Recipe::Lock).await?);
        }
    }
    if wants("w3") {
        for &n in &args.clients {
            emit(lines, workloads::independent(&target, n, duration).await?);
        }
    }
    if wants("w4") {
        for &n in &args.waiters {
            emit(lines, workloads::scale(&target, n, Recipe::Lock).await?);
        }
        if args.many > 0 {
            emit(lines, workloads::many_locks(&target, args.many, Duration::from_secs(10)).await?);
        }
    }
    if wants("w5") {
        emit(lines, workloads::local_queue(&target, args.tasks).await?);
    }
    if wants("e1") {
        emit(lines, workloads::uncontended(&target, args.cycles, Recipe::Election).await?);
    }
    if wants("e2") {
        for &n in &args.clients {
            emit(lines, workloads::contended(&target, n, duration, Duration::ZERO, Recipe::Election).await?);
        }
    }
    if wants("e4") {
        for &n in &args.waiters {
            emit(lines, workloads::scale(&target, n, Recipe::Election).await?);
        }
    }
    if wants("r2") {
        for read_percent in [90, 50] {
            for &n in &args.clients {
                let recipe = Recipe::ReadWrite { read_percent };
                emit(lines, workloads::contended(&target, n, duration, Duration::ZERO, recipe).await?);
            }
        }
    }
    if wants("r4") {
        for &n in &args.waiters {
            emit(lines, workloads::scale(&target, n, Recipe::ReadWrite { read_percent: 90 }).await?);
        }
    }
    if wants("s1") {
        emit(lines, workloads::uncontended(&target, args.cycles, Recipe::Permits(4)).await?);
    }
    if wants("s2") {
        for &n in &args.clients {
            emit(lines, workloads::contended(&target, n, duration, Duration::ZERO, Recipe::Permits(4)).await?);
        }
    }
    if wants("s4") {
        for &n in &args.waiters {
            emit(lines, workloads::scale(&target, n, Recipe::Permits(4)).await?);
        }
    }
    if wants("failover") {
        emit(lines, election::failover(&target, args.failovers).await?);
    }
    if wants("observers") {
        for &n in &args.observers {
            emit(lines, election::observers(&target, n, args.changes).await?);
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    // Logs only when asked for (RUST_LOG), on stderr: stdout carries the JSON lines.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let raw: Vec<String> = std::env::args().skip(1).collect();
    // The failover workload's leader: this binary again, in a process of its own.
    if let [lead, kind, url, name] = raw.as_slice() {
        if lead == election::LEAD {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let led = runtime.map(|rt| rt.block_on(election::lead_until_killed(kind, url, name)));
            return match led {
                Ok(Ok(())) => std::process::ExitCode::SUCCESS,
                Ok(Err(e)) | Err(e) => {
                    eprintln!("distlock-bench {}: {e}", election::LEAD);
                    std::process::ExitCode::FAILURE
                }
            };
        }
    }
    let args = match parse_args(&raw) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("distlock-bench: {message}");
            return std::process::ExitCode::from(64);
        }
    };
    // Kept for the whole run: the recorder stays installed, its figures are never read.
    let _recorder = match args.recorder {
        false => None,
        true => match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                eprintln!("distlock-bench: cannot install the metrics recorder: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let built = match args.runtime {
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    let runtime = match built {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("distlock-bench: cannot start a Tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The workloads run in a spawned task, as a service's request handlers do. On the thread
    // that blocks on the runtime, every request would cross threads to the connection's task
    // and back: the etcd client then costs a third more CPU per request.
    match runtime.block_on(async move { tokio::spawn(run_all(args, raw)).await }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("distlock-bench: the workloads' task failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_all(args: Args, raw: Vec<String>) -> std::process::ExitCode {
    let mut lines = Vec::new();
    for &kind in &args.backends {
        if let Err(e) = run(&args, kind, &mut lines).await {
            eprintln!("distlock-bench: {} failed: {e}", kind.label());
            return std::process::ExitCode::FAILURE;
        }
    }
    if let Some(path) = &args.report {
        if let Err(e) = report::write(path, &lines, &raw, args.runtime.label()) {
            eprintln!("distlock-bench: cannot write the report {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
        eprintln!("distlock-bench: wrote {}", path.display());
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn arguments_are_parsed_and_bad_ones_refused() {
        let a = args("w2 --backends etcd --clients 8 --seconds 2.5").unwrap();
        assert_eq!(a.workloads, vec!["w2"]);
        assert_eq!(a.backends, vec![Kind::Etcd]);
        assert_eq!(a.clients, vec![8]);
        assert_eq!(a.seconds, 2.5);
        assert_eq!(args("").unwrap().workloads.len(), WORKLOADS.len());
        assert_eq!(args("--warmup 0").unwrap().warmup, Some(0.0));
        assert_eq!(args("w1").unwrap().warmup, None);
        assert_eq!((args("w1").unwrap().rounds, args("w1 --rounds 7").unwrap().rounds), (5, 7));
        assert_eq!(args("").unwrap().runtime, Runtime::MultiThread);
        assert_eq!(args("--runtime current-thread").unwrap().runtime, Runtime::CurrentThread);
        for bad in [
            "w9",
            "--clients 2,x",
            "--clients 0,8",
            "--waiters 1,0",
            "--backends nats",
            "--cycles",
            "--seconds 0",
            "--rounds 0",
            "--warmup -1",
            "--warmup x",
            "--runtime tokio",
            "--runtime",
            "--observers 1,0",
            "--changes 0",
            "--failovers 0",
        ] {
            assert!(args(bad).is_err(), "{bad} must be refused");
        }
    }
}
