//! The `distlock` command line as a user runs it, on real etcd and ZooKeeper servers.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use distlock_core::conformance::Harness;
use distlock_tests::{shared, EtcdHarness, ZkHarness};
use tokio::process::{Child, Command};
use tokio::time::{timeout, Instant};

const BOUND: Duration = Duration::from_secs(30);

/// A backend for one test: its URL (with a 2 s TTL) and its harness.
struct Backend {
    url: String,
    harness: Box<dyn Harness>,
}

async fn etcd() -> Backend {
    let endpoints = shared::etcd().await.endpoints.clone();
    let h = EtcdHarness::new(endpoints.clone()).await;
    Backend { url: format!("etcd://{}/{}?ttl=2s", endpoints.join(","), h.prefix()), harness: Box::new(h) }
}

async fn zookeeper() -> Backend {
    let hosts = shared::zookeeper().await.endpoints.clone();
    let h = ZkHarness::new(hosts.clone()).await;
    Backend { url: format!("zk://{}{}?session_timeout=2s", hosts.join(","), h.chroot()), harness: Box::new(h) }
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
    for (url, problem) in [("etcd://h1:99999", "port"), ("redis://h", "unknown scheme"), ("nothing", "no scheme")] {
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
