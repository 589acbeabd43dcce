//! The conformance harness of the `mem://` backend: one fresh [`MemServer`] per test.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Faults, Harness};
use crate::mem::{MemBackend, MemLocks, MemServer};
use crate::{DistributedLock, LockClient, LockError, LockName};

/// Runs the suite on a fresh in-process server with a 1 s TTL.
#[derive(Debug, Clone)]
pub struct MemHarness {
    server: MemServer,
    ttl: Duration,
}

impl MemHarness {
    /// A harness on a new server.
    pub fn new() -> Self {
        MemHarness { server: MemServer::new(), ttl: Duration::from_secs(1) }
    }

    fn connect(&self, ttl: Duration) -> Result<Arc<MemLocks>, LockError> {
        Ok(Arc::new(LockClient::new(MemBackend::builder().server(self.server.clone()).ttl(ttl).build()?)))
    }
}

impl Default for MemHarness {
    fn default() -> Self {
        Self::new()
    }
}

struct MemFaults(Arc<MemLocks>);

#[async_trait]
impl Faults for MemFaults {
    async fn cut(&self) {
        self.0.backend().partition();
    }
    async fn heal(&self) {
        self.0.backend().heal();
    }
    async fn expire_session(&self) {
        self.0.backend().kill_session();
    }
    async fn drop_next_reply(&self) {
        self.0.backend().drop_next_reply();
    }
    async fn dropped_replies(&self) -> u64 {
        self.0.backend().dropped_replies()
    }
}

#[async_trait]
impl Harness for MemHarness {
    async fn client(&self) -> Arc<dyn DistributedLock> {
        self.connect(self.ttl).expect("a mem:// client")
    }

    async fn faulty_client(&self) -> (Arc<dyn DistributedLock>, Box<dyn Faults>) {
        let client = self.connect(self.ttl).expect("a mem:// client");
        (client.clone(), Box::new(MemFaults(client)))
    }

    async fn client_with_ttl(&self, ttl: Duration) -> Result<Arc<dyn DistributedLock>, LockError> {
        Ok(self.connect(ttl)?)
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn requests(&self) -> u64 {
        self.server.requests()
    }

    async fn delete_holder(&self, name: &str) {
        let name = LockName::new(name).expect("a valid name");
        self.server.delete_holder(&name).expect("a holder to delete");
    }

    async fn leftovers(&self) -> Vec<String> {
        let n = self.server.entry_count();
        (1..=n).map(|i| format!("queue entry {i} of {n}")).collect()
    }
}
