//! Fenced write: why a lock alone is not enough, and how the fencing token closes the gap.
//!
//! Writer A takes the lock, then freezes (a GC pause, a stopped VM, a network cut) for longer
//! than its session TTL. The server expires A's session and hands the lock to writer B, which
//! writes. When A wakes up it still "has" its guard and tries to write: the store, which
//! remembers the highest fencing token it has seen, refuses A's stale write.
//!
//! It runs on the in-process `mem://` backend, whose `partition()` freezes a client the way a
//! pause would (no server is needed): `cargo run --example fenced_write`.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use distlock::mem::{MemBackend, MemServer};
use distlock::{DistributedLock, FencingToken, LockClient};

/// A store that takes the writer's fencing token with every write and refuses older tokens.
#[derive(Default)]
struct FencedStore {
    highest: Mutex<Option<FencingToken>>,
    value: Mutex<String>,
}

impl FencedStore {
    fn write(&self, token: FencingToken, value: &str) -> Result<(), String> {
        let mut highest = self.highest.lock().unwrap();
        if highest.is_some_and(|h| token < h) {
            return Err(format!("refused: token {token} is older than {}", highest.unwrap_or(token)));
        }
        *highest = Some(token);
        *self.value.lock().unwrap() = value.to_owned();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<ExitCode, distlock::LockError> {
    let server = MemServer::new();
    let ttl = Duration::from_millis(500);
    let a = LockClient::new(MemBackend::builder().server(server.clone()).ttl(ttl).build()?);
    let b = LockClient::new(MemBackend::builder().server(server).ttl(ttl).build()?);
    let store = FencedStore::default();

    let a_guard = a.lock("orders/42").await?;
    let a_token = a_guard.fencing_token();
    println!("A holds orders/42 with token {a_token}");
    println!("A writes: {:?}", store.write(a_token, "A: charged"));

    println!("A freezes for longer than its {ttl:?} TTL...");
    a.backend().partition();
    let b_guard = b.lock("orders/42").await?; // granted once the server expired A's session
    println!("B holds orders/42 with token {} (A's session expired)", b_guard.fencing_token());
    println!("B writes: {:?}", store.write(b_guard.fencing_token(), "B: refunded"));

    a.backend().heal();
    println!("A wakes up; its guard says is_held() = {}", a_guard.is_held());
    let stale = store.write(a_token, "A: shipped");
    println!("A writes with token {a_token}: {stale:?}");
    println!("the store keeps {:?}", store.value.lock().unwrap());
    b_guard.release().await?;
    let _ = a_guard.release().await; // reports the loss
    a.close().await?;
    b.close().await?;
    Ok(if stale.is_err() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
