//! `distlock run NAME -- COMMAND` and `distlock elect NAME -- COMMAND`: hold the lock (or lead
//! the election) while the command runs; the command never outlives the hold (SIGTERM then
//! SIGKILL when it is lost; the kernel kills it if distlock dies), and the session never
//! outlives the run (closed on every way out).

use std::process::ExitStatus;
use std::time::Duration;

use distlock::{DistributedLock, LockError, LockGuard, LockUrl, WaitProgress};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::exit::Exit;

/// What the command runs under.
pub enum Want {
    /// The lock `name` (`run`).
    Lock,
    /// The read side of read-write lock `name` (`run --shared`).
    Read,
    /// The write side of read-write lock `name` (`run --exclusive`).
    Write,
    /// One of this many permits of semaphore `name` (`run --permits N`).
    Permit(u32),
    /// Leadership of the election `name`, campaigning with this value (`elect`).
    Leadership { value: String },
}

impl Want {
    /// What the user waits for, in messages: `lock`, `read lock`, `write lock`, `semaphore`,
    /// `election`.
    fn noun(&self) -> &'static str {
        match self {
            Want::Lock => "lock",
            Want::Read => "read lock",
            Want::Write => "write lock",
            Want::Permit(_) => "semaphore",
            Want::Leadership { .. } => "election",
        }
    }
}

pub struct RunOptions {
    pub url: String,
    pub name: String,
    pub want: Want,
    pub timeout: Option<Duration>,
    pub no_wait: bool,
    pub ttl: Option<Duration>,
    pub grace: Duration,
    pub command: Vec<String>,
    /// Whether to tell stderr where the wait stands.
    pub progress: bool,
}

/// The exit status a shell would report for the command.
fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// What was acquired: a lock's guard, or a leadership as its guard (its token is the term).
struct Held {
    guard: LockGuard,
    leader: bool,
}

impl Held {
    /// What the command finds in its environment.
    fn env(&self, name: &str) -> Vec<(&'static str, String)> {
        let token = self.guard.fencing_token().to_string();
        let mut env = vec![("DISTLOCK_NAME", name.to_owned()), ("DISTLOCK_FENCING_TOKEN", token.clone())];
        if self.leader {
            env.push(("DISTLOCK_TERM", token));
        }
        env
    }

    /// The hold, for messages: `lock "x" (fencing token 5)`, `leadership of "x" (term 5)`.
    fn describe(&self, name: &str) -> String {
        match self.leader {
            false => format!("lock {name:?} (fencing token {})", self.guard.fencing_token()),
            true => format!("leadership of {name:?} (term {})", self.guard.fencing_token()),
        }
    }
}

fn spawn(command: &[String], env: Vec<(&'static str, String)>) -> std::io::Result<Child> {
    let (program, args) = command.split_first().ok_or_else(|| std::io::Error::other("no command given"))?;
    let mut child = Command::new(program);
    child.args(args).envs(env);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when the
    // thread that spawned it (distlock's main thread) dies.
    unsafe {
        child.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    child.spawn()
}

/// SIGTERM, then SIGKILL after `grace`; returns how the child ended.
async fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "the command ignored SIGTERM: SIGKILL");
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

/// How a `run` ends before the command's own status: the exit (or a signal while waiting).
enum Ended {
    Exit(Exit),
    Signalled(i32),
}

impl From<Exit> for Ended {
    fn from(exit: Exit) -> Self {
        Ended::Exit(exit)
    }
}

impl From<LockError> for Ended {
    fn from(error: LockError) -> Self {
        Ended::Exit(error.into())
    }
}

pub async fn run(o: RunOptions) -> Result<u8, Exit> {
    let mut url = LockUrl::parse(&o.url)?;
    if let Some(ttl) = o.ttl {
        let Some(param) = distlock::ttl_param(&url.scheme) else {
            return Err(Exit::BadInput(format!("--ttl: the scheme {}:// has no TTL", url.scheme)));
        };
        url.set_param(param, &format!("{}ms", ttl.as_millis()));
    }
    let (mut sigterm, mut sigint) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        _ => return Err(Exit::Unavailable("cannot install signal handlers".into())),
    };
    let locks = distlock::connect_url(&url).await?;
    let outcome = hold_and_run(locks.as_ref(), &o, &mut sigterm, &mut sigint).await;
    // Whatever the way out, end the session and wait for the server to confirm it: nothing of
    // this run (a hold, a waiter given up, a release marker, the lease) outlives the process.
    if let Err(error) = locks.close().await {
        tracing::warn!(%error, "closing the session was not confirmed; the server ends it with its TTL");
    }
    match outcome {
        Ok(code) => Ok(code),
        Err(Ended::Exit(exit)) => Err(exit),
        Err(Ended::Signalled(signal)) => {
            eprintln!("distlock: stopped by signal {signal} while waiting for {} {:?}", o.want.noun(), o.name);
            Ok((128 + signal) as u8)
        }
    }
}

/// Takes the lock as the options say, runs the command under it, and releases it.
async fn hold_and_run(
    locks: &dyn DistributedLock,
    o: &RunOptions,
    sigterm: &mut Signal,
    sigint: &mut Signal,
) -> Result<u8, Ended> {
    let guard = tokio::select! {
        guard = acquire(locks, o) => guard?,
        _ = sigterm.recv() => return Err(Ended::Signalled(libc::SIGTERM)),
        _ = sigint.recv() => return Err(Ended::Signalled(libc::SIGINT)),
    };
    let held = guard.describe(&o.name);
    let env = guard.env(&o.name);
    let guard = guard.guard;
    let token = guard.fencing_token();
    tracing::info!(lock = %o.name, token = token.get(), command = ?o.command, "holding {held}: running the command");
    let mut child = match spawn(&o.command, env) {
        Ok(child) => child,
        Err(e) => {
            let _ = guard.release().await;
            let code = if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
            eprintln!("distlock: cannot run {:?}: {e}", o.command[0]);
            return Ok(code);
        }
    };
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        reason = guard.lost() => {
            tracing::error!(lock = %o.name, token = token.get(), %reason, "{held} lost: terminating the command");
            terminate(&mut child, o.grace).await;
            let _ = guard.release().await;
            return Err(Exit::Lost(format!(
                "{held} was lost while the command ran ({reason}); the command was terminated"
            )).into());
        }
        _ = sigterm.recv() => terminate(&mut child, o.grace).await,
        _ = sigint.recv() => terminate(&mut child, o.grace).await,
    };
    if let Err(e) = guard.release().await {
        tracing::warn!(lock = %o.name, error = %e, "release not confirmed");
    }
    Ok(status.map(status_code).unwrap_or(1))
}

/// Takes the lock (or leadership) as the options say: at once or not at all, within the
/// timeout, or waiting.
async fn acquire(locks: &dyn DistributedLock, o: &RunOptions) -> Result<Held, Ended> {
    if o.no_wait {
        let held = match &o.want {
            Want::Lock => locks.try_lock(&o.name).await?.map(|guard| Held { guard, leader: false }),
            Want::Read => locks.try_read_lock(&o.name).await?.map(|guard| Held { guard, leader: false }),
            Want::Write => locks.try_write_lock(&o.name).await?.map(|guard| Held { guard, leader: false }),
            Want::Permit(permits) => {
                locks.try_acquire_permit(&o.name, *permits).await?.map(|guard| Held { guard, leader: false })
            }
            Want::Leadership { value } => {
                locks.try_campaign(&o.name, value).await?.map(|l| Held { guard: l.into_guard(), leader: true })
            }
        };
        return Ok(held.ok_or_else(|| {
            Exit::NotAcquired(format!(
                "{} {:?} is taken or waited for by another client (--no-wait)",
                o.want.noun(),
                o.name
            ))
        })?);
    }
    let wait = async {
        match (&o.want, o.progress) {
            (Want::Lock, true) => locks
                .lock_with_progress(&o.name, PROGRESS_EVERY, &|step| report(&o.name, &step))
                .await
                .map(|guard| Held { guard, leader: false }),
            (Want::Lock, false) => locks.lock(&o.name).await.map(|guard| Held { guard, leader: false }),
            (Want::Read, _) => locks.read_lock(&o.name).await.map(|guard| Held { guard, leader: false }),
            (Want::Write, _) => locks.write_lock(&o.name).await.map(|guard| Held { guard, leader: false }),
            (Want::Permit(permits), _) => {
                locks.acquire_permit(&o.name, *permits).await.map(|guard| Held { guard, leader: false })
            }
            (Want::Leadership { value }, _) => {
                locks.campaign(&o.name, value).await.map(|l| Held { guard: l.into_guard(), leader: true })
            }
        }
    };
    match o.timeout {
        Some(timeout) => Ok(tokio::time::timeout(timeout, wait).await.map_err(|_| {
            Exit::NotAcquired(format!("{} {:?} was not granted within {timeout:?} (--timeout)", o.want.noun(), o.name))
        })??),
        None => Ok(wait.await?),
    }
}

/// How often a waiting `run` reads the queue to tell the person at the terminal where it stands.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// One line on stderr per step of the wait.
fn report(name: &str, step: &WaitProgress) {
    match step {
        WaitProgress::Queued { entry } => {
            eprintln!("distlock: queued for lock {name:?} (will hold it with fencing token {})", entry.token)
        }
        WaitProgress::Waiting { queue, ahead } => {
            let holder = match &queue.holder {
                Some(h) => {
                    let age = h.age().map(|a| format!(" for {:.1}s", a.as_secs_f64())).unwrap_or_default();
                    format!("held by {}{age} (fencing token {})", h.owner, h.token)
                }
                None => "free".to_owned(),
            };
            eprintln!("distlock: waiting for lock {name:?}: {holder}; {ahead} ahead of us");
        }
        _ => {}
    }
}
