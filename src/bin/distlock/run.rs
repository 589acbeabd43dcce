//! `distlock run NAME -- COMMAND`: hold the lock while the command runs; the command never
//! outlives the lock (SIGTERM then SIGKILL when it is lost; the kernel kills it if distlock dies).

use std::process::ExitStatus;
use std::time::Duration;

use distlock::{LockGuard, LockUrl};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::Exit;

pub struct RunOptions {
    pub url: String,
    pub name: String,
    pub timeout: Option<Duration>,
    pub no_wait: bool,
    pub ttl: Option<Duration>,
    pub grace: Duration,
    pub command: Vec<String>,
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

fn spawn(command: &[String], name: &str, guard: &LockGuard) -> std::io::Result<Child> {
    let (program, args) = command.split_first().ok_or_else(|| std::io::Error::other("no command given"))?;
    let mut child = Command::new(program);
    child.args(args).env("DISTLOCK_NAME", name).env("DISTLOCK_FENCING_TOKEN", guard.fencing_token().to_string());
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

pub async fn run(o: RunOptions) -> Result<u8, Exit> {
    let mut url = LockUrl::parse(&o.url)?;
    if let Some(ttl) = o.ttl {
        let Some(param) = distlock::ttl_param(&url.scheme) else {
            return Err(Exit::BadInput(format!("--ttl: the scheme {}:// has no TTL", url.scheme)));
        };
        url.set_param(param, &format!("{}ms", ttl.as_millis()));
    }
    let locks = distlock::connect_url(&url).await?;
    let guard = if o.no_wait {
        locks.try_lock(&o.name).await?.ok_or_else(|| {
            Exit::NotAcquired(format!("lock {:?} is held or queued by another client (--no-wait)", o.name))
        })?
    } else if let Some(timeout) = o.timeout {
        locks.lock_timeout(&o.name, timeout).await?.ok_or_else(|| {
            Exit::NotAcquired(format!("lock {:?} was not granted within {timeout:?} (--timeout)", o.name))
        })?
    } else {
        locks.lock(&o.name).await?
    };
    let token = guard.fencing_token();
    tracing::info!(lock = %o.name, token = token.get(), command = ?o.command, "holding the lock: running the command");
    let mut child = match spawn(&o.command, &o.name, &guard) {
        Ok(child) => child,
        Err(e) => {
            let _ = guard.release().await;
            let code = if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
            eprintln!("distlock: cannot run {:?}: {e}", o.command[0]);
            return Ok(code);
        }
    };
    let (mut sigterm, mut sigint) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        _ => return Err(Exit::Unavailable("cannot install signal handlers".into())),
    };
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        reason = guard.lost() => {
            tracing::error!(lock = %o.name, token = token.get(), %reason, "lock lost: terminating the command");
            terminate(&mut child, o.grace).await;
            let _ = guard.release().await;
            return Err(Exit::Lost(format!(
                "lock {:?} (fencing token {token}) was lost while the command ran ({reason}); the command was terminated",
                o.name
            )));
        }
        _ = sigterm.recv() => terminate(&mut child, o.grace).await,
        _ = sigint.recv() => terminate(&mut child, o.grace).await,
    };
    if let Err(e) = guard.release().await {
        tracing::warn!(lock = %o.name, error = %e, "release not confirmed");
    }
    Ok(status.map(status_code).unwrap_or(1))
}
