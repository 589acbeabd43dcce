//! One server process: start, SIGKILL, SIGSTOP/SIGCONT, restart, and stop on drop.
//!
//! Processes are spawned from one long-lived thread with `PR_SET_PDEATHSIG = SIGKILL`: the
//! kernel kills them when that thread ends, which is when the test binary exits, even if it
//! panics or is killed. (The signal follows the spawning *thread*, so spawning from a test's
//! own thread would kill shared servers when that test ends.)

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("server-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The channel never closes (the sender is static): this thread lives as long as
                // the process, and so do the servers it spawned.
            })
            .expect("spawning the server-spawner thread");
        Mutex::new(tx)
    })
}

/// A server process described by its command line, which can be stopped and started again.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    program: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts `program args`, appending its stdout and stderr to `log`.
    pub fn start(name: &str, program: &str, args: Vec<String>, log: PathBuf) -> io::Result<Self> {
        let mut process = ServerProcess { name: name.into(), program: program.into(), args, log, child: None };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        spawner().lock().unwrap().send((command, tx)).map_err(|_| io::Error::other("spawner thread gone"))?;
        let child = rx.recv().map_err(|_| io::Error::other("spawner thread gone"))??;
        tracing::debug!(server = %self.name, pid = child.id(), "server started");
        self.child = Some(child);
        Ok(())
    }

    /// The name given at start (`etcd-1`, `zk-2`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file (stdout and stderr).
    pub fn log(&self) -> &PathBuf {
        &self.log
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: sending a signal to our own child process.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::debug!(server = %self.name, "server killed");
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`ServerProcess::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Kills the process and starts it again with the same command line and data.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// A few words on whether the process still runs, for failure messages: a server that
    /// could not bind its port exits, and a wait for it to serve then times out.
    pub fn liveness(&self) -> &'static str {
        let Some(pid) = self.pid() else { return "not started" };
        // The state field follows the parenthesised command name; `Z`: exited, not yet reaped.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) => {
                "the process has exited"
            }
            Ok(_) => "the process still runs",
            Err(_) => "the process is gone",
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
