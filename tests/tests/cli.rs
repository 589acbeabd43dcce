//! The `distlock` command line as a user runs it, on real etcd, ZooKeeper and Redis servers.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use distlock_core::conformance::{wait_for_queue, Harness};
use distlock_tests::{shared, EtcdHarness, RedisHarness, ZkHarness};
use std::fs::File;

use tokio::process::{Child, Command};
use tokio::time::{timeout, Instant};

const BOUND: Duration = Duration::from_secs(30);

/// A backend for one test: its URL (with a 2 s TTL), its harness, and how to ask the server
/// whether a session of `distlock` still lives.
struct Backend {
    url: String,
    harness: Box<dyn Harness>,
    server: Server,
}

enum Server {
    Etcd { endpoints: Vec<String>, prefix: String },
    ZooKeeper { hosts: Vec<String>, admin: zookeeper_client::Client },
    Redis { endpoint: String, prefix: String },
}

/// Builds the `distlock` binary (once per test binary) off the test's runtime, before the
/// harness connects: a build that blocked the runtime would starve the harness's sessions.
async fn built() {
    tokio::task::spawn_blocking(distlock_tests::cli::binary).await.expect("build the distlock binary");
}

async fn etcd() -> Backend {
    built().await;
    let endpoints = shared::etcd().await.endpoints.clone();
    let h = EtcdHarness::new(endpoints.clone()).await;
    let url = format!("etcd://{}/{}?ttl=2s", endpoints.join(","), h.prefix());
    let server = Server::Etcd { endpoints, prefix: h.prefix().to_owned() };
    Backend { url, harness: Box::new(h), server }
}

async fn zookeeper() -> Backend {
    built().await;
    let hosts = shared::zookeeper().await.endpoints.clone();
    let h = ZkHarness::new(hosts.clone()).await;
    let url = format!("zk://{}{}?session_timeout=2s", hosts.join(","), h.chroot());
    let admin = h.admin().clone();
    Backend { url, harness: Box::new(h), server: Server::ZooKeeper { hosts, admin } }
}

async fn redis() -> Backend {
    built().await;
    let endpoint = shared::redis().await.endpoints[0].clone();
    let h = RedisHarness::new(endpoint.clone()).await;
    let url = format!("redis://{endpoint}?prefix={}&ttl=2s", h.prefix());
    let server = Server::Redis { endpoint, prefix: h.prefix().to_owned() };
    Backend { url, harness: Box::new(h), server }
}

impl Backend {
    /// The same backend with a longer session TTL in the URL, for tests where waiting for a
    /// session to time out must show.
    fn with_ttl(mut self, ttl: &str) -> Self {
        self.url = self.url.replace("ttl=2s", &format!("ttl={ttl}")).replace("timeout=2s", &format!("timeout={ttl}"));
        self
    }

    /// The session a `distlock -v` run opened, from its log on stderr: the etcd lease id in
    /// hex, the ZooKeeper session id as `0x…`, or the Redis session id.
    fn session_in(&self, stderr: &str) -> String {
        let field = match self.server {
            Server::Etcd { .. } => "lease=",
            Server::ZooKeeper { .. } | Server::Redis { .. } => "session=",
        };
        let line = stderr.lines().find(|l| l.contains("session opened") && l.contains(field));
        let value = line.and_then(|l| l.split(field).nth(1)).and_then(|v| v.split([' ', ')']).next());
        let value = value.unwrap_or_else(|| panic!("no {field} in the run's log:\n{stderr}")).trim_matches('"');
        match self.server {
            Server::Etcd { .. } | Server::Redis { .. } => value.to_owned(),
            Server::ZooKeeper { .. } => format!("0x{}", value.trim_start_matches("0x")),
        }
    }

    /// What the server still holds of `session`: its lease and keys (etcd, as `etcdctl` lists
    /// them), its znodes (by their ephemeral owner) and connections (ZooKeeper's `cons`), or its
    /// key and queue entries (Redis, as `redis-cli` lists them).
    async fn held_by(&self, session: &str) -> Vec<String> {
        let mut held = Vec::new();
        match &self.server {
            Server::Etcd { endpoints, prefix } => {
                let etcdctl = |args: &[&str]| {
                    let output = std::process::Command::new("etcdctl")
                        .arg(format!("--endpoints={}", endpoints.join(",")))
                        .args(args)
                        .output()
                        .expect("run etcdctl");
                    assert!(output.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
                    String::from_utf8_lossy(&output.stdout).into_owned()
                };
                let leases = etcdctl(&["lease", "list"]);
                held.extend(leases.lines().filter(|l| l.trim() == session).map(|l| format!("lease {l}")));
                let keys = etcdctl(&["get", "--prefix", "--keys-only", prefix]);
                held.extend(keys.lines().filter(|k| k.ends_with(session)).map(|k| format!("key {k}")));
            }
            Server::ZooKeeper { hosts, admin } => {
                let owner = i64::from_str_radix(session.trim_start_matches("0x"), 16).expect("a hex session id");
                for znode in self.harness.leftovers().await {
                    if let Ok(Some(stat)) = admin.check_stat(&znode).await {
                        if stat.ephemeral_owner == owner {
                            held.push(format!("znode {znode}"));
                        }
                    }
                }
                for host in hosts {
                    let cons = distlock_tests::zk::four_letter(host, "cons").await.expect("cons");
                    held.extend(cons.lines().filter(|c| c.contains(&format!("sid={session}"))).map(str::to_owned));
                }
            }
            Server::Redis { endpoint, prefix } => {
                let (host, port) = endpoint.rsplit_once(':').expect("host:port");
                let redis_cli = |args: &[&str]| {
                    let output = std::process::Command::new("redis-cli")
                        .args(["-h", host, "-p", port])
                        .args(args)
                        .output()
                        .expect("run redis-cli");
                    assert!(output.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&output.stderr));
                    String::from_utf8_lossy(&output.stdout).into_owned()
                };
                let own = format!("{prefix}:*{session}*");
                held.extend(redis_cli(&["--scan", "--pattern", &own]).lines().map(|key| format!("key {key}")));
                held.extend(self.harness.leftovers().await.into_iter().filter(|entry| entry.contains(session)));
            }
        }
        held
    }

    /// Panics unless the server holds nothing of `session` within one second.
    async fn holds_nothing_of(&self, session: &str, after: &str) {
        let held = distlock_tests::retry_until(Duration::from_secs(1), || async {
            let held = self.held_by(session).await;
            if held.is_empty() {
                Ok(())
            } else {
                Err(held)
            }
        })
        .await;
        if let Err(held) = held {
            panic!(
                "one second after distlock exited ({after}), the server still holds of its session {session}: {held:?}"
            );
        }
    }
}

fn distlock(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(distlock_tests::cli::binary());
    command.env("DISTLOCK_URL", url).args(args).kill_on_drop(true).stdin(Stdio::null());
    command
}

/// Waits until `path` exists and has at least `lines` lines.
async fn wait_for_lines(path: &Path, lines: usize) -> Vec<String> {
    let read = || std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>();
    distlock_tests::retry_until(BOUND, || async {
        let got = read();
        if got.len() >= lines {
            Ok(got)
        } else {
            Err(got)
        }
    })
    .await
    .unwrap_or_else(|got| panic!("{} never had {lines} lines: {got:?}", path.display()))
}

async fn exit_code(child: &mut Child) -> i32 {
    timeout(BOUND, child.wait()).await.expect("distlock exits").expect("wait").code().unwrap_or(-1)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

async fn two_runs_never_overlap(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("marks");
    let script = format!(
        "echo \"start $DISTLOCK_FENCING_TOKEN\" >> {0}; sleep 0.3; echo \"end $DISTLOCK_FENCING_TOKEN\" >> {0}",
        log.display()
    );
    let mut first = distlock(&b.url, &["run", "cli/overlap", "--", "sh", "-c", &script]).spawn().expect("spawn");
    let mut second = distlock(&b.url, &["run", "cli/overlap", "--", "sh", "-c", &script]).spawn().expect("spawn");
    assert_eq!(exit_code(&mut first).await, 0);
    assert_eq!(exit_code(&mut second).await, 0);
    let marks = wait_for_lines(&log, 4).await;
    let parsed: Vec<(&str, u64)> = marks
        .iter()
        .map(|l| l.split_once(' ').map(|(m, t)| (m, t.parse().expect("a token"))).expect("a mark"))
        .collect();
    assert_eq!(parsed[0].0, "start");
    assert_eq!(parsed[1], ("end", parsed[0].1), "the first run ends before the second starts: {marks:?}");
    assert_eq!(parsed[2].0, "start");
    assert_eq!(parsed[3], ("end", parsed[2].1), "{marks:?}");
    assert!(parsed[2].1 > parsed[0].1, "the second holder has a larger fencing token: {marks:?}");
}

async fn no_wait_on_a_held_lock_exits_75_at_once(b: Backend) {
    let holder = b.harness.client().await;
    let guard = holder.lock("cli/busy").await.expect("lock");
    let started = Instant::now();
    let output = distlock(&b.url, &["run", "--no-wait", "cli/busy", "--", "true"]).output().await.expect("run");
    assert_eq!(output.status.code(), Some(75), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(started.elapsed() < Duration::from_secs(5), "it did not wait: {:?}", started.elapsed());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-wait"));
    let timed = distlock(&b.url, &["run", "--timeout", "300ms", "cli/busy", "--", "true"]).output().await.expect("run");
    assert_eq!(timed.status.code(), Some(75));
    guard.release().await.expect("release");
}

async fn killing_distlock_kills_its_command_and_the_waiter_proceeds(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let marks = dir.path().join("marks");
    let holder_script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let mut holder = distlock(&b.url, &["run", "cli/killed", "--", "sh", "-c", &holder_script]).spawn().expect("spawn");
    let child_pid: u32 = wait_for_lines(&pidfile, 1).await[0].trim().parse().expect("pid");
    let waiter_script = format!("echo got >> {}", marks.display());
    let mut waiter = distlock(&b.url, &["run", "cli/killed", "--", "sh", "-c", &waiter_script]).spawn().expect("spawn");
    distlock_core::conformance::wait_for_queue(
        b.harness.client().await.as_ref(),
        "cli/killed",
        BOUND,
        "the second distlock to queue",
        |i| i.waiters.len() == 1,
    )
    .await;
    let killed_at = Instant::now();
    holder.start_kill().expect("SIGKILL distlock");
    let _ = holder.wait().await;
    distlock_tests::retry_until(Duration::from_secs(5), || async {
        if alive(child_pid) {
            Err(())
        } else {
            Ok(())
        }
    })
    .await
    .expect("the command dies with distlock");
    assert_eq!(exit_code(&mut waiter).await, 0);
    assert!(
        killed_at.elapsed() <= b.harness.ttl() + Duration::from_secs(1),
        "the waiter took {:?}",
        killed_at.elapsed()
    );
    assert_eq!(wait_for_lines(&marks, 1).await, ["got"]);
}

async fn a_lost_lock_terminates_the_command_and_exits_70(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let marks = dir.path().join("marks");
    let script = format!(
        "trap 'echo terminated >> {0}; exit 0' TERM; echo running >> {0}; while true; do sleep 0.05; done",
        marks.display()
    );
    let mut run =
        distlock(&b.url, &["run", "--grace", "5s", "cli/lost", "--", "sh", "-c", &script]).spawn().expect("spawn");
    wait_for_lines(&marks, 1).await;
    b.harness.delete_holder("cli/lost").await; // an operator deletes the lock under it
    assert_eq!(exit_code(&mut run).await, 70);
    assert_eq!(wait_for_lines(&marks, 2).await, ["running", "terminated"], "the command got SIGTERM");
}

async fn a_bad_url_exits_64_naming_the_problem() {
    built().await;
    for (url, problem) in [("etcd://h1:99999", "port"), ("nats://h", "unknown scheme"), ("nothing", "no scheme")] {
        let output = distlock(url, &["run", "x", "--", "true"]).output().await.expect("run");
        assert_eq!(output.status.code(), Some(64), "{url}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(problem), "{url}: {stderr}");
    }
}

#[tokio::test]
async fn etcd_two_runs_never_overlap() {
    two_runs_never_overlap(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_two_runs_never_overlap() {
    two_runs_never_overlap(zookeeper().await).await;
}

#[tokio::test]
async fn etcd_no_wait_on_a_held_lock_exits_75_at_once() {
    no_wait_on_a_held_lock_exits_75_at_once(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_no_wait_on_a_held_lock_exits_75_at_once() {
    no_wait_on_a_held_lock_exits_75_at_once(zookeeper().await).await;
}

#[tokio::test]
async fn etcd_killing_distlock_kills_its_command_and_the_waiter_proceeds() {
    killing_distlock_kills_its_command_and_the_waiter_proceeds(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_killing_distlock_kills_its_command_and_the_waiter_proceeds() {
    killing_distlock_kills_its_command_and_the_waiter_proceeds(zookeeper().await).await;
}

#[tokio::test]
async fn etcd_a_lost_lock_terminates_the_command_and_exits_70() {
    a_lost_lock_terminates_the_command_and_exits_70(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_a_lost_lock_terminates_the_command_and_exits_70() {
    a_lost_lock_terminates_the_command_and_exits_70(zookeeper().await).await;
}

#[tokio::test]
async fn bad_urls_exit_64_naming_the_problem() {
    a_bad_url_exits_64_naming_the_problem().await;
}

async fn status_lists_holder_and_waiters_in_order(b: Backend) {
    let holder = b.harness.client().await;
    let guard = holder.lock("cli/status").await.expect("lock");
    let waiter = b.harness.client().await;
    let waiting = tokio::spawn(async move { waiter.lock("cli/status").await.expect("lock") });
    distlock_core::conformance::wait_for_queue(holder.as_ref(), "cli/status", BOUND, "the waiter to queue", |i| {
        i.waiters.len() == 1
    })
    .await;
    let output = distlock(&b.url, &["status", "--json", "cli/status"]).output().await.expect("status");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let queue = doc["queue"].as_array().expect("a queue");
    assert_eq!(doc["held"], true);
    assert_eq!(queue.len(), 2);
    assert_eq!(queue[0]["role"], "holder");
    assert_eq!(queue[0]["fencing_token"], guard.fencing_token().get());
    assert_eq!(queue[1]["role"], "waiter");
    assert!(queue[1]["fencing_token"].as_u64() > queue[0]["fencing_token"].as_u64());
    let table = distlock(&b.url, &["status", "cli/status"]).output().await.expect("status");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("holder") && text.contains("waiter") && text.contains(&guard.fencing_token().to_string()),
        "{text}"
    );
    guard.release().await.expect("release");
    timeout(BOUND, waiting).await.expect("waiter").expect("task").release().await.expect("release");
}

#[tokio::test]
async fn etcd_status_lists_holder_and_waiters_in_order() {
    status_lists_holder_and_waiters_in_order(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_status_lists_holder_and_waiters_in_order() {
    status_lists_holder_and_waiters_in_order(zookeeper().await).await;
}

/// A `distlock -v run` whose stderr goes to a file in `dir`, so the test can read its session.
fn verbose_run(b: &Backend, dir: &Path, tag: &str, args: &[&str]) -> (Child, std::path::PathBuf) {
    let log = dir.join(format!("{tag}.stderr"));
    let mut command = distlock(&b.url, &[&["-v", "run"], args].concat());
    command.stderr(File::create(&log).expect("stderr file"));
    (command.spawn().expect("spawn distlock"), log)
}

/// However `distlock run` ends (the command exits, `--timeout` or `--no-wait` gives up, the lock
/// is lost, SIGTERM while it waits), the server holds nothing of its session a second later:
/// no key, lease, znode or session.
async fn a_run_leaves_nothing_however_it_exits(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "cli/leaves-nothing";
    let session = |log: &Path| b.session_in(&std::fs::read_to_string(log).unwrap_or_default());

    // The command exits: 0.
    let go = dir.path().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.02; done", go.display());
    let (mut run, log) = verbose_run(&b, dir.path(), "normal", &[name, "--", "sh", "-c", &script]);
    let observer = b.harness.client().await;
    wait_for_queue(observer.as_ref(), name, BOUND, "the run to hold", |i| i.holder.is_some()).await;
    File::create(&go).expect("let the command finish");
    assert_eq!(exit_code(&mut run).await, 0);
    b.holds_nothing_of(&session(&log), "the command exited").await;

    // Given up: --timeout and --no-wait on a held lock, then SIGTERM while waiting.
    let guard = observer.lock(name).await.expect("hold the lock");
    let (mut run, log) = verbose_run(&b, dir.path(), "timeout", &["--timeout", "500ms", name, "--", "true"]);
    assert_eq!(exit_code(&mut run).await, 75);
    b.holds_nothing_of(&session(&log), "--timeout gave up").await;
    let (mut run, log) = verbose_run(&b, dir.path(), "no-wait", &["--no-wait", name, "--", "true"]);
    assert_eq!(exit_code(&mut run).await, 75);
    b.holds_nothing_of(&session(&log), "--no-wait gave up").await;
    let (mut run, log) = verbose_run(&b, dir.path(), "sigterm", &[name, "--", "true"]);
    wait_for_queue(observer.as_ref(), name, BOUND, "the run to queue", |i| i.waiters.len() == 1).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(run.id().expect("pid") as libc::pid_t, libc::SIGTERM) };
    assert_eq!(exit_code(&mut run).await, 128 + libc::SIGTERM);
    b.holds_nothing_of(&session(&log), "SIGTERM while waiting").await;
    guard.release().await.expect("release");

    // The lock is lost: 70.
    let (mut run, log) = verbose_run(&b, dir.path(), "lost", &[name, "--", "sleep", "1000"]);
    wait_for_queue(observer.as_ref(), name, BOUND, "the run to hold", |i| i.holder.is_some()).await;
    b.harness.delete_holder(name).await;
    assert_eq!(exit_code(&mut run).await, 70);
    b.holds_nothing_of(&session(&log), "the lock was lost").await;
}

#[tokio::test]
async fn etcd_a_run_leaves_nothing_however_it_exits() {
    a_run_leaves_nothing_however_it_exits(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_a_run_leaves_nothing_however_it_exits() {
    a_run_leaves_nothing_however_it_exits(zookeeper().await).await;
}

/// A run that gave up (`--timeout`) does not hold up the next one: with a 10 s TTL, the next
/// run is served as soon as the holder releases, not when the quitter's session times out.
async fn a_waiter_behind_a_give_up_is_served_at_the_release(b: Backend) {
    let b = b.with_ttl("10s");
    let name = "cli/give-up";
    let observer = b.harness.client().await;
    let guard = observer.lock(name).await.expect("hold the lock");
    let quitter = distlock(&b.url, &["run", "--timeout", "1s", name, "--", "true"]).output().await.expect("run");
    assert_eq!(quitter.status.code(), Some(75), "{}", String::from_utf8_lossy(&quitter.stderr));
    let mut next = distlock(&b.url, &["run", name, "--", "true"]).spawn().expect("spawn");
    wait_for_queue(observer.as_ref(), name, BOUND, "the next run to queue", |i| i.waiters.len() == 1).await;
    let released = Instant::now();
    guard.release().await.expect("release");
    assert_eq!(exit_code(&mut next).await, 0);
    assert!(
        released.elapsed() < Duration::from_secs(1),
        "the next run waited {:?} after the release",
        released.elapsed()
    );
}

#[tokio::test]
async fn etcd_a_waiter_behind_a_give_up_is_served_at_the_release() {
    a_waiter_behind_a_give_up_is_served_at_the_release(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_a_waiter_behind_a_give_up_is_served_at_the_release() {
    a_waiter_behind_a_give_up_is_served_at_the_release(zookeeper().await).await;
}

/// A waiting run tells stderr where it stands (asked with -v, as stderr is no terminal here):
/// queued, with the token it will hold with, then the holder's token and how many are ahead.
async fn a_waiting_run_shows_its_progress(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "cli/progress";
    let observer = b.harness.client().await;
    let guard = observer.lock(name).await.expect("hold the lock");
    let (mut run, log) = verbose_run(&b, dir.path(), "progress", &[name, "--", "true"]);
    let holder = format!("(fencing token {}); 1 ahead of us", guard.fencing_token());
    let lines = distlock_tests::retry_until(BOUND, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&holder) {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await
    .unwrap_or_else(|text| panic!("no progress line naming the holder's token: {text}"));
    assert!(lines.contains(&format!("queued for lock {name:?}")), "{lines}");
    guard.release().await.expect("release");
    assert_eq!(exit_code(&mut run).await, 0);
}

#[tokio::test]
async fn etcd_a_waiting_run_shows_its_progress() {
    a_waiting_run_shows_its_progress(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_a_waiting_run_shows_its_progress() {
    a_waiting_run_shows_its_progress(zookeeper().await).await;
}

/// `distlock status --all PREFIX` lists every held or awaited lock under the prefix.
async fn status_all_lists_every_lock_under_a_prefix(b: Backend) {
    let client = b.harness.client().await;
    let a = client.lock("cli/all/a").await.expect("lock");
    let c = client.lock("cli/all/b/c").await.expect("lock");
    let other = client.lock("cli/other").await.expect("lock");
    let output = distlock(&b.url, &["status", "--all", "--json", "cli/all/"]).output().await.expect("status");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let locks = doc["locks"].as_array().expect("locks");
    let names: Vec<&str> = locks.iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, ["cli/all/a", "cli/all/b/c"]);
    assert_eq!(locks[1]["queue"][0]["fencing_token"], c.fencing_token().get());
    let table = distlock(&b.url, &["status", "--all"]).output().await.expect("status");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("cli/all/a:") && text.contains("cli/all/b/c:") && text.contains("cli/other:"), "{text}");
    for guard in [a, c, other] {
        guard.release().await.expect("release");
    }
}

#[tokio::test]
async fn etcd_status_all_lists_every_lock_under_a_prefix() {
    status_all_lists_every_lock_under_a_prefix(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_status_all_lists_every_lock_under_a_prefix() {
    status_all_lists_every_lock_under_a_prefix(zookeeper().await).await;
}

async fn elect_runs_one_leader_at_a_time_and_observe_prints_each(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("terms");
    let mut observer =
        distlock_tests::peer_process::LinePeer::spawn("distlock observe", distlock(&b.url, &["observe", "cli/leader"]))
            .expect("spawn distlock observe");
    observer.line(BOUND, |l| l == "no leader").await;
    let script = format!("echo \"$DISTLOCK_TERM $DISTLOCK_FENCING_TOKEN\" >> {}; sleep 0.3", log.display());
    let elect = |value: &str| {
        distlock(&b.url, &["elect", "--value", value, "cli/leader", "--", "sh", "-c", &script]).spawn().expect("spawn")
    };
    let mut first = elect("host-a");
    observer.line(BOUND, |l| l.starts_with("leader host-a (term ")).await;
    let mut second = elect("host-b");
    assert_eq!(exit_code(&mut first).await, 0);
    assert_eq!(exit_code(&mut second).await, 0);
    let (_, b_line) = observer.line(BOUND, |l| l.starts_with("leader host-b (term ")).await;
    observer.line(BOUND, |l| l == "no leader").await;
    let terms: Vec<u64> = wait_for_lines(&log, 2)
        .await
        .iter()
        .map(|l| {
            let (term, token) = l.split_once(' ').expect("term and token");
            assert_eq!(term, token, "DISTLOCK_TERM is the fencing token");
            term.parse().expect("a term")
        })
        .collect();
    assert!(terms[1] > terms[0], "the second leader has a greater term: {terms:?}");
    assert!(b_line.ends_with(&format!("(term {})", terms[1])), "{b_line}");
    observer.signal(libc::SIGINT);
    let status = observer.exited(BOUND).await.expect("observe exits on SIGINT");
    assert_eq!(status.code(), Some(0));
}

async fn lost_leadership_terminates_the_command_and_exits_70(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let marks = dir.path().join("marks");
    let script = format!(
        "trap 'echo terminated >> {0}; exit 0' TERM; echo leading >> {0}; while true; do sleep 0.05; done",
        marks.display()
    );
    let mut elect =
        distlock(&b.url, &["elect", "--grace", "5s", "cli/deposed", "--", "sh", "-c", &script]).spawn().expect("spawn");
    wait_for_lines(&marks, 1).await;
    b.harness.delete_holder("cli/deposed").await; // an operator deletes the leader's entry
    assert_eq!(exit_code(&mut elect).await, 70);
    assert_eq!(wait_for_lines(&marks, 2).await, ["leading", "terminated"], "the command got SIGTERM");
}

#[tokio::test]
async fn etcd_elect_runs_one_leader_at_a_time_and_observe_prints_each() {
    elect_runs_one_leader_at_a_time_and_observe_prints_each(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_elect_runs_one_leader_at_a_time_and_observe_prints_each() {
    elect_runs_one_leader_at_a_time_and_observe_prints_each(zookeeper().await).await;
}

#[tokio::test]
async fn etcd_lost_leadership_terminates_the_command_and_exits_70() {
    lost_leadership_terminates_the_command_and_exits_70(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_lost_leadership_terminates_the_command_and_exits_70() {
    lost_leadership_terminates_the_command_and_exits_70(zookeeper().await).await;
}

/// `run --shared` holds the read side of a read-write lock beside other readers, `run
/// --exclusive` its write side alone, and neither gets in beside a writer.
async fn shared_runs_read_together_and_exclusive_runs_write_alone(b: Backend) {
    let holder = b.harness.client().await;
    let reading = holder.read_lock("cli/rw").await.expect("read_lock");
    let run = |args: &[&str]| distlock(&b.url, args).output();
    let shared = run(&["run", "--shared", "--no-wait", "cli/rw", "--", "sh", "-c", "echo $DISTLOCK_FENCING_TOKEN"])
        .await
        .expect("run --shared");
    assert_eq!(shared.status.code(), Some(0), "a reader beside a reader: {}", String::from_utf8_lossy(&shared.stderr));
    let token: u64 = String::from_utf8_lossy(&shared.stdout).trim().parse().expect("the reader's fencing token");
    assert!(token > reading.fencing_token().get(), "the later reader's token is greater");
    let exclusive = run(&["run", "--exclusive", "--no-wait", "cli/rw", "--", "true"]).await.expect("run --exclusive");
    assert_eq!(exclusive.status.code(), Some(75), "a writer beside a reader");
    reading.release().await.expect("release");

    let writing = holder.write_lock("cli/rw").await.expect("write_lock");
    let shared = run(&["run", "--shared", "--no-wait", "cli/rw", "--", "true"]).await.expect("run --shared");
    assert_eq!(shared.status.code(), Some(75), "a reader beside a writer");
    let both = run(&["run", "--shared", "--exclusive", "cli/rw", "--", "true"]).await.expect("run");
    assert_eq!(both.status.code(), Some(64), "--shared and --exclusive together are a usage error");
    writing.release().await.expect("release");
    let exclusive = run(&["run", "--exclusive", "--no-wait", "cli/rw", "--", "true"]).await.expect("run --exclusive");
    assert_eq!(exclusive.status.code(), Some(0), "{}", String::from_utf8_lossy(&exclusive.stderr));
}

#[tokio::test]
async fn etcd_shared_runs_read_together_and_exclusive_runs_write_alone() {
    shared_runs_read_together_and_exclusive_runs_write_alone(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_shared_runs_read_together_and_exclusive_runs_write_alone() {
    shared_runs_read_together_and_exclusive_runs_write_alone(zookeeper().await).await;
}

/// `run --permits N` holds one of the N permits of a semaphore: a run gets in beside fewer than
/// N holders and not beside N, and a run that asks with another N is told so (64).
async fn permit_runs_share_a_semaphore(b: Backend) {
    let (first, second) = (b.harness.client().await, b.harness.client().await);
    let held = first.acquire_permit("cli/pool", 2).await.expect("a permit");
    let run = |args: &[&str]| distlock(&b.url, args).output();
    let beside = run(&["run", "--permits", "2", "--no-wait", "cli/pool", "--", "true"]).await.expect("run");
    assert_eq!(beside.status.code(), Some(0), "a second permit of 2: {}", String::from_utf8_lossy(&beside.stderr));
    let also = second.acquire_permit("cli/pool", 2).await.expect("a second permit");
    let full = run(&["run", "--permits", "2", "--no-wait", "cli/pool", "--", "true"]).await.expect("run");
    assert_eq!(full.status.code(), Some(75), "a third permit of 2");
    let other = run(&["run", "--permits", "3", "cli/pool", "--", "true"]).await.expect("run");
    assert_eq!(other.status.code(), Some(64), "another number of permits");
    assert!(String::from_utf8_lossy(&other.stderr).contains("2 permits"), "{}", String::from_utf8_lossy(&other.stderr));
    held.release().await.expect("release");
    also.release().await.expect("release");
}

#[tokio::test]
async fn etcd_permit_runs_share_a_semaphore() {
    permit_runs_share_a_semaphore(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_permit_runs_share_a_semaphore() {
    permit_runs_share_a_semaphore(zookeeper().await).await;
}

/// `distlock status` tells a read-write lock from a semaphore (and its number of permits), lists
/// every holder, and gives each entry its kind and fencing token; `--all` lists both queues.
async fn status_shows_the_kind_holders_and_tokens_of_shared_queues(b: Backend) {
    let (a, c, d) = (b.harness.client().await, b.harness.client().await, b.harness.client().await);
    let readers = [
        a.read_lock("cli/shared/rw").await.expect("read_lock"),
        c.read_lock("cli/shared/rw").await.expect("read_lock"),
    ];
    let writing = tokio::spawn(async move { d.write_lock("cli/shared/rw").await.expect("write_lock") });
    distlock_core::conformance::wait_for_queue(a.as_ref(), "cli/shared/rw", BOUND, "the writer to queue", |i| {
        i.waiters.len() == 1
    })
    .await;
    let permits = [
        a.acquire_permit("cli/shared/pool", 3).await.expect("a permit"),
        c.acquire_permit("cli/shared/pool", 3).await.expect("a permit"),
    ];

    let json = |args: &'static [&'static str]| {
        let url = b.url.clone();
        async move {
            let output = distlock(&url, args).output().await.expect("status");
            assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
            serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON")
        }
    };
    let rw = json(&["status", "--json", "cli/shared/rw"]).await;
    assert_eq!((rw["kind"].as_str(), rw["holders"].as_u64()), (Some("read-write lock"), Some(2)), "{rw}");
    let kinds: Vec<(&str, &str)> = rw["queue"]
        .as_array()
        .expect("a queue")
        .iter()
        .filter_map(|e| Some((e["role"].as_str()?, e["kind"].as_str()?)))
        .collect();
    assert_eq!(kinds, [("holder", "read"), ("holder", "read"), ("waiter", "write")]);
    for (entry, guard) in rw["queue"].as_array().expect("a queue").iter().zip(&readers) {
        assert_eq!(entry["fencing_token"], guard.fencing_token().get());
    }
    let pool = json(&["status", "--json", "cli/shared/pool"]).await;
    assert_eq!(
        (pool["kind"].as_str(), pool["permits"].as_u64(), pool["holders"].as_u64()),
        (Some("semaphore"), Some(3), Some(2))
    );
    assert_eq!(pool["queue"][1]["fencing_token"], permits[1].fencing_token().get());
    assert_eq!(pool["queue"][1]["kind"], "permit of 3");
    let all = json(&["status", "--all", "--json", "cli/shared/"]).await;
    let names: Vec<(&str, &str)> = all["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .filter_map(|l| Some((l["name"].as_str()?, l["kind"].as_str()?)))
        .collect();
    assert_eq!(names, [("cli/shared/pool", "semaphore"), ("cli/shared/rw", "read-write lock")]);

    let table = distlock(&b.url, &["status", "cli/shared/pool"]).output().await.expect("status");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("semaphore of 3 permits, 2 held, 0 waiting") && text.contains("permit of 3"), "{text}");
    for guard in readers.into_iter().chain(permits) {
        guard.release().await.expect("release");
    }
    timeout(BOUND, writing).await.expect("the writer").expect("task").release().await.expect("release");
}

#[tokio::test]
async fn etcd_status_shows_the_kind_holders_and_tokens_of_shared_queues() {
    status_shows_the_kind_holders_and_tokens_of_shared_queues(etcd().await).await;
}

#[tokio::test]
async fn zookeeper_status_shows_the_kind_holders_and_tokens_of_shared_queues() {
    status_shows_the_kind_holders_and_tokens_of_shared_queues(zookeeper().await).await;
}

/// `--metrics-addr` serves the metrics while the command runs: the hold shows as one
/// acquisition and one hold now; an address already in use exits 64 before anything is locked.
#[tokio::test]
async fn etcd_run_serves_its_metrics_while_the_command_runs() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = etcd().await;
    let port = distlock_tests::ports::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut run =
        distlock(&b.url, &["run", "--metrics-addr", &addr, "cli/metrics", "--", "sleep", "30"]).spawn().expect("spawn");
    wait_for_queue(b.harness.client().await.as_ref(), "cli/metrics", BOUND, "the run to hold", |i| i.holder.is_some())
        .await;
    let scrape = distlock_tests::retry_until(BOUND, || async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.map_err(|e| e.to_string())?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(text)
    })
    .await
    .expect("the metrics endpoint answers");
    for line in [
        "distlock_acquisitions_total{backend=\"etcd\",recipe=\"lock\"} 1",
        "distlock_holds{backend=\"etcd\",recipe=\"lock\"} 1",
        "distlock_sessions{backend=\"etcd\",state=\"connected\"} 1",
    ] {
        assert!(scrape.lines().any(|l| l == line), "{line} not in:\n{scrape}");
    }
    let busy =
        distlock(&b.url, &["run", "--metrics-addr", &addr, "cli/metrics-2", "--", "true"]).output().await.expect("run");
    assert_eq!(busy.status.code(), Some(64), "{}", String::from_utf8_lossy(&busy.stderr));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("--metrics-addr"));
    let info = b.harness.client().await.inspect("cli/metrics-2").await.expect("inspect");
    assert!(info.is_free(), "nothing was locked: {info:?}");
    run.kill().await.expect("kill");
}

/// The same runs on Redis: a `redis://` URL is all that changes.
mod redis_backend {
    use super::*;

    #[tokio::test]
    async fn two_runs_never_overlap_on_redis() {
        two_runs_never_overlap(redis().await).await;
    }

    #[tokio::test]
    async fn a_lost_lock_terminates_the_command_and_exits_70_on_redis() {
        a_lost_lock_terminates_the_command_and_exits_70(redis().await).await;
    }

    #[tokio::test]
    async fn status_lists_holder_and_waiters_in_order_on_redis() {
        status_lists_holder_and_waiters_in_order(redis().await).await;
    }

    #[tokio::test]
    async fn a_run_leaves_nothing_however_it_exits_on_redis() {
        a_run_leaves_nothing_however_it_exits(redis().await).await;
    }

    #[tokio::test]
    async fn elect_runs_one_leader_at_a_time_and_observe_prints_each_on_redis() {
        elect_runs_one_leader_at_a_time_and_observe_prints_each(redis().await).await;
    }

    #[tokio::test]
    async fn shared_runs_read_together_and_exclusive_runs_write_alone_on_redis() {
        shared_runs_read_together_and_exclusive_runs_write_alone(redis().await).await;
    }

    #[tokio::test]
    async fn permit_runs_share_a_semaphore_on_redis() {
        permit_runs_share_a_semaphore(redis().await).await;
    }

    #[tokio::test]
    async fn status_shows_the_kind_holders_and_tokens_of_shared_queues_on_redis() {
        status_shows_the_kind_holders_and_tokens_of_shared_queues(redis().await).await;
    }
}
