//! Other clients as real processes beside distlock (`etcdctl elect`, a Curator LeaderLatch in
//! Java): each a child whose output lines the test reads, with the moment each arrived.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running peer: its output lines as they come, and its standard input.
pub struct LinePeer {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl LinePeer {
    /// Starts `command` (killed when the peer drops) and reads its standard output.
    pub fn spawn(what: &str, mut command: Command) -> std::io::Result<Self> {
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Ok(LinePeer { what: what.to_owned(), stdin: child.stdin.take(), child, lines, seen: Vec::new() })
    }

    /// The next line for which `wanted` holds (earlier lines are skipped), and when it came.
    /// Panics if none comes within `bound` or the output ends.
    pub async fn line(&mut self, bound: Duration, wanted: impl Fn(&str) -> bool) -> (Instant, String) {
        let deadline = Instant::now() + bound;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some((at, line))) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return (at, line);
                    }
                }
                Ok(None) => panic!("{} ended without the expected line; it printed {:?}", self.what, self.seen),
                Err(_) => panic!("{} printed no expected line within {bound:?}; it printed {:?}", self.what, self.seen),
            }
        }
    }

    /// Whether a line for which `wanted` holds has come already (without waiting).
    pub fn printed(&mut self, wanted: impl Fn(&str) -> bool) -> bool {
        while let Ok((_, line)) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().any(|l| wanted(l))
    }

    /// Writes `line` to the peer's standard input.
    pub async fn send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }

    /// Sends `signal` to the peer.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a pid of our own child and a valid signal number.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }

    /// Waits for the peer to exit, at most `bound`.
    pub async fn exited(&mut self, bound: Duration) -> std::io::Result<std::process::ExitStatus> {
        tokio::time::timeout(bound, self.child.wait()).await.map_err(|_| std::io::Error::other("still running"))?
    }
}

/// The Debian jars a Curator client needs (libcurator-recipes-java and what it depends on).
const CURATOR_JARS: [&str; 8] = [
    "curator-recipes",
    "curator-framework",
    "curator-client",
    "zookeeper",
    "zookeeper-jute",
    "guava",
    "slf4j-api",
    "slf4j-nop",
];

fn curator_classpath(classes: &std::path::Path) -> String {
    let mut path: Vec<String> = CURATOR_JARS.iter().map(|jar| format!("/usr/share/java/{jar}.jar")).collect();
    path.push(classes.display().to_string());
    path.join(":")
}

/// Compiles the Curator peers in `tests/java` once per test binary; the directory of their classes.
fn curator_peer_classes() -> &'static Result<PathBuf, String> {
    static CLASSES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java");
        let out = crate::temp_dir("java-peers").map_err(|e| e.to_string())?.keep();
        let status = std::process::Command::new("javac")
            .args(["-nowarn", "-cp", &curator_classpath(&out), "-d"])
            .arg(&out)
            .args(["CuratorPeer.java", "CuratorLatch.java", "CuratorReadWrite.java"].map(|file| sources.join(file)))
            .status()
            .map_err(|e| format!("javac (Debian default-jdk-headless): {e}"))?;
        status.success().then_some(out).ok_or_else(|| format!("javac failed on {}: {status}", sources.display()))
    })
}

/// Starts the Curator peer `class` with `args`, named `what` in failure messages.
async fn curator_peer(what: &str, class: &str, args: &[&str]) -> LinePeer {
    let classes = tokio::task::spawn_blocking(curator_peer_classes).await.expect("javac task");
    let classes = classes.as_ref().expect("the Curator peers compile");
    let mut command = Command::new("java");
    command.args(["-cp", &curator_classpath(classes), class]).args(args);
    LinePeer::spawn(what, command).expect("java (Debian default-jre-headless)")
}

/// Starts a Curator LeaderLatch participant `id` on `path` (a full path, no chroot) of the
/// ensemble at `hosts`. See `tests/java/CuratorLatch.java` for what it prints.
pub async fn curator_latch(hosts: &str, path: &str, id: &str) -> LinePeer {
    curator_peer(&format!("Curator LeaderLatch {id}"), "CuratorLatch", &[hosts, path, id]).await
}

/// Starts a Curator InterProcessReadWriteLock's read (`shared`) or write side on `path` (a full
/// path, no chroot) of the ensemble at `hosts`. See `tests/java/CuratorReadWrite.java`.
pub async fn curator_read_write(hosts: &str, path: &str, shared: bool) -> LinePeer {
    let side = if shared { "read" } else { "write" };
    curator_peer(&format!("Curator {side} lock"), "CuratorReadWrite", &[hosts, path, side]).await
}

/// Starts `etcdctl elect` with `args` (a name and a proposal, or `-l` and a name) against
/// `endpoints`.
pub fn etcdctl_elect(endpoints: &[String], args: &[&str]) -> LinePeer {
    let mut command = Command::new("etcdctl");
    command.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", endpoints.join(","))).arg("elect").args(args);
    LinePeer::spawn(&format!("etcdctl elect {}", args.join(" ")), command).expect("etcdctl (Debian etcd-client)")
}
