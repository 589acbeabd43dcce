//! A session's place in one queue: what queuing hands to the wait, and the wait to the hold.

use std::sync::Arc;

use distlock_core::{backend::Recipe, LockName};

use crate::session::ZkSession;

/// A session's znode in one lock's queue.
#[derive(Debug)]
pub(crate) struct Place {
    pub(crate) session: Arc<ZkSession>,
    pub(crate) name: LockName,
    pub(crate) path: String,
    pub(crate) czxid: i64,
    pub(crate) recipe: Recipe,
}
