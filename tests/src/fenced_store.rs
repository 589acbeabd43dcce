//! The fenced store of the fault suite: a tiny key-value server over loopback TCP that takes a
//! fencing token with every read and write, remembers the highest token it has seen per key,
//! refuses any operation with a lower one, and logs every accept and reject with
//! CLOCK_MONOTONIC times. (Fencing reads too stops a paused holder's read-modify-write from
//! overwriting its successor's.) A read-write lock's readers read with `SHARED`: readers hold
//! side by side with tokens in any order, so a shared read is refused only below the highest
//! token of a read or write of an exclusive holder, and an exclusive operation below any.
//!
//! Protocol, one line each way: `READ key token` and `SHARED key token` → `OK value` |
//! `REJECT highest`; `WRITE key token value` → `OK` | `REJECT highest`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// CLOCK_MONOTONIC in nanoseconds: comparable across the processes of one machine.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One operation the store decided on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreEvent {
    /// CLOCK_MONOTONIC ns when the store decided.
    pub t: u64,
    /// `read` or `write`.
    pub op: String,
    /// The key.
    pub key: String,
    /// The token the client sent.
    pub token: u64,
    /// The value read or written.
    pub value: u64,
    /// Whether the operation was accepted.
    pub accepted: bool,
}

#[derive(Debug, Default)]
struct State {
    /// The highest token accepted per key, of any operation.
    highest: HashMap<String, u64>,
    /// The highest token accepted per key, of an exclusive holder's read or write.
    highest_exclusive: HashMap<String, u64>,
    values: HashMap<String, u64>,
    log: Vec<StoreEvent>,
}

/// A running fenced store; stops when dropped.
#[derive(Debug)]
pub struct FencedStore {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl FencedStore {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply = handle(&state, &line);
                        if write.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(FencedStore { addr, state, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every decision so far, in the order made.
    pub fn log(&self) -> Vec<StoreEvent> {
        self.state.lock().unwrap().log.clone()
    }

    /// The current value of `key`.
    pub fn value(&self, key: &str) -> u64 {
        self.state.lock().unwrap().values.get(key).copied().unwrap_or(0)
    }
}

impl Drop for FencedStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn handle(state: &Mutex<State>, line: &str) -> String {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (op, key, token, value) = match parts.as_slice() {
        ["READ", key, token] => ("read", *key, token.parse::<u64>(), None),
        ["SHARED", key, token] => ("shared_read", *key, token.parse::<u64>(), None),
        ["WRITE", key, token, value] => ("write", *key, token.parse::<u64>(), value.parse::<u64>().ok()),
        _ => return "ERR expected READ key token | SHARED key token | WRITE key token value".into(),
    };
    let Ok(token) = token else { return "ERR the token is not a number".into() };
    let mut s = state.lock().unwrap();
    let shared = op == "shared_read";
    let highest = match shared {
        true => s.highest_exclusive.get(key),
        false => s.highest.get(key),
    }
    .copied()
    .unwrap_or(0);
    let accepted = token >= highest;
    let current = s.values.get(key).copied().unwrap_or(0);
    let value = match (op, value) {
        ("write", Some(v)) => v,
        ("write", None) => return "ERR the value is not a number".into(),
        _ => current,
    };
    if accepted {
        let any = s.highest.entry(key.to_owned()).or_default();
        *any = (*any).max(token);
        if !shared {
            s.highest_exclusive.insert(key.to_owned(), token);
        }
        if op == "write" {
            s.values.insert(key.to_owned(), value);
        }
    }
    s.log.push(StoreEvent { t: monotonic_ns(), op: op.into(), key: key.into(), token, value, accepted });
    match (accepted, op) {
        (true, "read" | "shared_read") => format!("OK {value}"),
        (true, _) => "OK".into(),
        (false, _) => format!("REJECT {highest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_tokens_are_refused_for_reads_and_writes() {
        let state = Mutex::new(State::default());
        assert_eq!(handle(&state, "READ k 5"), "OK 0");
        assert_eq!(handle(&state, "WRITE k 5 1"), "OK");
        assert_eq!(handle(&state, "READ k 7"), "OK 1");
        assert_eq!(handle(&state, "WRITE k 5 2"), "REJECT 7");
        assert_eq!(handle(&state, "READ k 6"), "REJECT 7");
        assert_eq!(handle(&state, "WRITE k 7 2"), "OK");
        assert!(handle(&state, "DELETE k").starts_with("ERR"));
        let log = &state.lock().unwrap().log;
        assert_eq!(log.iter().filter(|e| !e.accepted).count(), 2);
    }

    #[test]
    fn shared_reads_are_refused_only_below_an_exclusive_holder() {
        let state = Mutex::new(State::default());
        assert_eq!(handle(&state, "WRITE k 5 1"), "OK");
        assert_eq!(handle(&state, "SHARED k 8"), "OK 1");
        assert_eq!(handle(&state, "SHARED k 6"), "OK 1", "a reader beside a later one");
        assert_eq!(handle(&state, "SHARED k 4"), "REJECT 5", "a reader from before the writer");
        assert_eq!(handle(&state, "WRITE k 7 2"), "REJECT 8", "a writer from before a reader that read");
        assert_eq!(handle(&state, "READ k 9"), "OK 1");
        assert_eq!(handle(&state, "SHARED k 8"), "REJECT 9");
    }
}
