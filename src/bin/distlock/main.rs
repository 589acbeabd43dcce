//! `distlock`: run a command while holding a distributed lock or leading an election, for
//! scripts and cron jobs on many hosts (like `flock`, `etcdctl lock`, `etcdctl elect` or
//! `consul lock`), and show who holds, waits and leads.

mod exit;
mod metrics;
mod observe;
mod run;
mod status;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use exit::Exit;

const EXIT_CODES: &str = "\
Exit status of `run` and `elect`:
  the command's own   when it ran (128+N if it was killed by signal N)
  77                  the lock service refused the credentials or the rights
  75                  not acquired (busy with --no-wait, or --timeout passed)
  128+N               distlock got signal N (SIGTERM, SIGINT) while waiting
  70                  the lock or leadership was lost while the command ran (it got SIGTERM,
                      then SIGKILL)
  69                  the lock service is unreachable or failed
  64                  bad URL, lock name or option";

/// Run a command while holding a distributed lock on etcd, ZooKeeper, Redis or mem://.
#[derive(Debug, Parser)]
#[command(name = "distlock", version, after_help = EXIT_CODES)]
struct Cli {
    /// The lock service, e.g. etcd://h1:2379,h2:2379/myapp, zk://zk1:2181/myapp or redis://r1:6379?prefix=myapp.
    #[arg(long, env = "DISTLOCK_URL", global = true)]
    url: Option<String>,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Wait for the lock (FIFO), run COMMAND while holding it, release when it exits.
    ///
    /// The command gets DISTLOCK_NAME and DISTLOCK_FENCING_TOKEN in its environment. If the lock
    /// is lost, the command gets SIGTERM, then SIGKILL after --grace. If distlock itself dies,
    /// the command is killed with it: no critical section outlives its lock.
    ///
    /// With --shared or --exclusive, NAME is a read-write lock instead: --shared runs take its
    /// read side together, an --exclusive run takes its write side alone. A plain run is the
    /// lock NAME (etcdctl lock, Curator's InterProcessMutex), a queue apart from the read-write
    /// lock's: writers that must exclude --shared readers run with --exclusive. With --permits
    /// N, NAME is a semaphore: at most N runs hold a permit at a time (every run of NAME must
    /// pass the same N).
    #[command(after_help = EXIT_CODES)]
    Run {
        /// The lock name, e.g. jobs/nightly-report.
        name: String,
        /// Hold the read side of read-write lock NAME: with other --shared runs, without any
        /// --exclusive one.
        #[arg(long, conflicts_with = "exclusive")]
        shared: bool,
        /// Hold the write side of read-write lock NAME: alone, without any --shared run.
        #[arg(long, conflicts_with = "permits")]
        exclusive: bool,
        /// Hold one of the N permits of semaphore NAME (at least 1).
        #[arg(long, value_name = "N", conflicts_with = "shared")]
        permits: Option<u32>,
        #[command(flatten)]
        hold: HoldArgs,
    },
    /// Campaign in election NAME (FIFO), run COMMAND while this host leads, resign when it exits.
    ///
    /// The command gets DISTLOCK_NAME, DISTLOCK_TERM and DISTLOCK_FENCING_TOKEN (the term) in
    /// its environment. If leadership is lost, the command gets SIGTERM, then SIGKILL after
    /// --grace. If distlock itself dies, the command is killed with it. Interoperates with
    /// `etcdctl elect` on etcd and Curator's LeaderLatch on ZooKeeper.
    #[command(after_help = EXIT_CODES)]
    Elect {
        /// The election's name, e.g. shards/7.
        name: String,
        /// The value published while this host leads (default: HOSTNAME:PID).
        #[arg(long)]
        value: Option<String>,
        #[command(flatten)]
        hold: HoldArgs,
    },
    /// Print the leader of election NAME, then one line per change, until interrupted.
    ///
    /// Each line is `leader VALUE (term T)` or `no leader`; with --json, one JSON object per line.
    Observe {
        /// The election's name.
        name: String,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the holder and the waiters of a lock, in queue order, with their age and token.
    ///
    /// With --all, NAME is a prefix and every held or awaited lock under it is shown: `--all
    /// jobs/` for the locks below jobs/, `--all` alone for every lock of the URL's prefix.
    Status {
        /// The lock name (with --all: a prefix of lock names, or nothing for all locks).
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Show every lock under NAME.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// How `run` and `elect` wait, hold and run their command.
#[derive(Debug, clap::Args)]
struct HoldArgs {
    /// Give up after this long (500ms, 10s, 2m) and exit 75.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Exit 75 at once if someone else holds, leads or waits.
    #[arg(long, conflicts_with = "timeout")]
    no_wait: bool,
    /// The session TTL: how long after this host dies the lock (or leadership) passes on.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Between SIGTERM and SIGKILL when the hold is lost or distlock is stopped.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    grace: Duration,
    /// Serve distlock's metrics as Prometheus text on http://ADDR/metrics while this runs
    /// (ADDR like 127.0.0.1:9000).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    distlock_core::parse_duration("duration", text).map_err(|e| e.to_string())
}

impl HoldArgs {
    fn options(self, url: String, name: String, want: run::Want, progress: bool) -> run::RunOptions {
        let HoldArgs { timeout, no_wait, ttl, grace, command, metrics_addr: _ } = self;
        run::RunOptions { url, name, want, timeout, no_wait, ttl, grace, command, progress }
    }
}

/// The value a host campaigns with unless told: `HOSTNAME:PID`.
fn default_value() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = match host.trim() {
        "" => "localhost",
        host => host,
    };
    format!("{host}:{}", std::process::id())
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let colours = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours).init();
}

// One thread: the child is spawned from the main thread, which lives as long as the process, so
// the child's parent-death signal fires exactly when distlock dies.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(Exit::Usage.code());
        }
        Err(e) => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
    };
    init_logging(cli.verbose);
    let Some(url) = cli.url else {
        eprintln!("distlock: no lock service given: pass --url URL or set DISTLOCK_URL (e.g. etcd://127.0.0.1:2379)");
        return ExitCode::from(Exit::Usage.code());
    };
    let metrics_addr = match &cli.command {
        Command::Run { hold, .. } | Command::Elect { hold, .. } => hold.metrics_addr,
        _ => None,
    };
    if let Some(addr) = metrics_addr {
        if let Err(exit) = metrics::serve(addr) {
            eprintln!("distlock: {exit}");
            return ExitCode::from(exit.code());
        }
    }
    let outcome = match cli.command {
        Command::Run { name, shared, exclusive, permits, hold } => {
            // Where the wait stands, on stderr: for a person at a terminal, or when asked (-v).
            let progress = cli.verbose > 0 || std::io::stderr().is_terminal();
            let want = match (shared, exclusive, permits) {
                (true, _, _) => run::Want::Read,
                (_, true, _) => run::Want::Write,
                (_, _, Some(permits)) => run::Want::Permit(permits),
                _ => run::Want::Lock,
            };
            run::run(hold.options(url, name, want, progress)).await
        }
        Command::Elect { name, value, hold } => {
            let want = run::Want::Leadership { value: value.unwrap_or_else(default_value) };
            run::run(hold.options(url, name, want, false)).await
        }
        Command::Observe { name, json } => observe::observe(&url, &name, json).await,
        Command::Status { name, all, json } => status::status(&url, name.as_deref().unwrap_or(""), all, json).await,
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(exit) => {
            eprintln!("distlock: {exit}");
            ExitCode::from(exit.code())
        }
    }
}
