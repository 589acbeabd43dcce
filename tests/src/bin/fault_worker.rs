//! A fault-suite worker: loops acquire → fenced read → sleep 0–200 ms → fenced write of value+1 →
//! release, for a given time, logging every step to its history. It deliberately keeps going
//! when its lock is lost (it only logs it): stopping stale writes is the fenced store's job.
//!
//! With `DISTLOCK_WORKER_RECIPE=election` it campaigns (value `worker-ID`) and resigns instead
//! of locking and releasing: its holds are leaderships, their tokens terms. With `read-write`
//! it takes the read lock or the write lock, one or the other at random: a reader makes one
//! fenced shared read (`SHARED`), a writer the read and write of the lock. With `permits=N` it
//! takes one of N permits and touches no store (permit holders share it).
//!
//! `fault_worker URL LOCK STORE_ADDR HISTORY WORKER_ID SECONDS`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{DistributedLock, LockError, LockGuard};

use distlock_tests::history::{Event, HistoryWriter};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Store {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Store {
    async fn call(&mut self, request: String) -> Option<String> {
        self.write.write_all(format!("{request}\n").as_bytes()).await.ok()?;
        self.lines.next_line().await.ok().flatten()
    }
}

/// What the worker takes turns with, from `DISTLOCK_WORKER_RECIPE`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recipe {
    Lock,
    Election,
    ReadWrite,
    Permits(u32),
}

impl Recipe {
    fn from_env() -> Option<Recipe> {
        match std::env::var("DISTLOCK_WORKER_RECIPE").unwrap_or_default().as_str() {
            "" | "lock" => Some(Recipe::Lock),
            "election" => Some(Recipe::Election),
            "read-write" => Some(Recipe::ReadWrite),
            other => other.strip_prefix("permits=").and_then(|n| n.parse().ok()).map(Recipe::Permits),
        }
    }
}

/// Takes `lock` as `recipe` says (`shared`: the read lock), waiting at most `wait`.
async fn acquire(
    locks: &dyn DistributedLock,
    recipe: Recipe,
    shared: bool,
    lock: &str,
    value: &str,
    wait: Duration,
) -> Result<Option<LockGuard>, LockError> {
    match recipe {
        Recipe::Lock => locks.lock_timeout(lock, wait).await,
        Recipe::Election => locks.campaign_timeout(lock, value, wait).await.map(|l| l.map(|l| l.into_guard())),
        Recipe::ReadWrite if shared => bounded(wait, locks.read_lock(lock)).await,
        Recipe::ReadWrite => bounded(wait, locks.write_lock(lock)).await,
        Recipe::Permits(permits) => bounded(wait, locks.acquire_permit(lock, permits)).await,
    }
}

/// `taken`, given up after `wait` (`Ok(None)`; a wait is cancel-safe).
async fn bounded(
    wait: Duration,
    taken: impl std::future::Future<Output = Result<LockGuard, LockError>>,
) -> Result<Option<LockGuard>, LockError> {
    match tokio::time::timeout(wait, taken).await {
        Ok(taken) => taken.map(Some),
        Err(_) => Ok(None),
    }
}

/// A small xorshift generator: the sleeps need no cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn next_millis(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, lock, store_addr, history, worker, seconds] = args.as_slice() else {
        eprintln!("usage: fault_worker URL LOCK STORE_ADDR HISTORY WORKER_ID SECONDS");
        return std::process::ExitCode::from(64);
    };
    let (Ok(worker), Ok(seconds)) = (worker.parse::<u32>(), seconds.parse::<u64>()) else {
        eprintln!("WORKER_ID and SECONDS are numbers");
        return std::process::ExitCode::from(64);
    };
    let Some(recipe) = Recipe::from_env() else {
        eprintln!("DISTLOCK_WORKER_RECIPE takes lock, election, read-write or permits=N");
        return std::process::ExitCode::from(64);
    };
    let Ok(writer) = HistoryWriter::open(std::path::Path::new(history), worker) else {
        eprintln!("cannot open {history}");
        return std::process::ExitCode::from(73);
    };
    let log = Arc::new(Mutex::new(writer));
    let record = |event: Event| log.lock().unwrap_or_else(|p| p.into_inner()).log(event);
    let Ok(stream) = TcpStream::connect(store_addr.as_str()).await else {
        eprintln!("cannot reach the store at {store_addr}");
        return std::process::ExitCode::from(69);
    };
    let (read, write) = stream.into_split();
    let mut store = Store { lines: BufReader::new(read).lines(), write };
    let locks = match distlock::connect(url).await {
        Ok(locks) => locks,
        Err(e) => {
            eprintln!("connect: {e}");
            return std::process::ExitCode::from(69);
        }
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (u64::from(std::process::id()) << 16 | u64::from(worker)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    // With DISTLOCK_WORKER_MAX_WAIT_MS, each wait is cut short after a random time up to that:
    // waits then end (cancelled) around the moment of grant.
    let max_wait = std::env::var("DISTLOCK_WORKER_MAX_WAIT_MS").ok().and_then(|v| v.parse::<u64>().ok());
    let value = format!("worker-{worker}");
    while tokio::time::Instant::now() < deadline {
        record(Event::AcquireInvoke);
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = match max_wait {
            Some(max) => remaining.min(Duration::from_millis(1 + rng.next_millis(max))),
            None => remaining,
        };
        let shared = recipe == Recipe::ReadWrite && rng.next_millis(2) == 0;
        let guard = match acquire(locks.as_ref(), recipe, shared, lock, &value, wait).await {
            Ok(Some(guard)) => guard,
            Ok(None) if max_wait.is_some() && !remaining.is_zero() => continue,
            Ok(None) => break,
            Err(e) => {
                record(Event::AcquireError { message: e.to_string() });
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let token = guard.fencing_token().get();
        record(Event::AcquireOk { token, shared });
        // Log the loss the moment it fires.
        let lost = guard.lost_token();
        let lost_log = {
            let (lost, log) = (lost.clone(), log.clone());
            tokio::spawn(async move {
                lost.cancelled().await;
                log.lock().unwrap_or_else(|p| p.into_inner()).log(Event::Lost { token, reason: "lost() fired".into() });
            })
        };
        let read = match (recipe, shared) {
            (Recipe::Permits(_), _) => None,
            (_, true) => Some(format!("SHARED counter {token}")),
            (_, false) => Some(format!("READ counter {token}")),
        };
        let value = match read {
            None => None,
            Some(read) => match store.call(read).await {
                Some(reply) => match reply.strip_prefix("OK ").and_then(|v| v.parse::<u64>().ok()) {
                    Some(value) => {
                        record(Event::Read { token, value, ok: true });
                        Some(value)
                    }
                    None => {
                        record(Event::Read { token, value: 0, ok: false });
                        None
                    }
                },
                None => return std::process::ExitCode::from(69),
            },
        };
        tokio::time::sleep(Duration::from_millis(rng.next_millis(200))).await;
        if let Some(value) = value.filter(|_| !shared) {
            let reply = store.call(format!("WRITE counter {token} {}", value + 1)).await.unwrap_or_default();
            record(Event::Write { token, value: value + 1, ok: reply == "OK" });
        }
        // A loss that came due while the process was stopped fires on the same timer tick as
        // the sleep ends: let it be logged before the release (a reader goes straight here).
        tokio::task::yield_now().await;
        lost_log.abort();
        record(Event::ReleaseInvoke { token });
        match guard.release().await {
            Ok(()) => record(Event::ReleaseOk { token }),
            Err(e) => record(Event::ReleaseError { token, message: e.to_string() }),
        }
        // A short pause before queuing again, as real work between jobs would make.
        tokio::time::sleep(Duration::from_millis(rng.next_millis(50))).await;
    }
    std::process::ExitCode::SUCCESS
}
