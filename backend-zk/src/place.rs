//! A session's place in one queue: what queuing hands to the wait, and the wait to the hold.

use std::sync::Arc;

use distlock_core::backend::{Grant, Recipe};
use distlock_core::{LockError, LockName};

use crate::session::ZkSession;

/// A session's znode in one lock's queue.
#[derive(Debug)]
pub(crate) struct Place {
    pub(crate) session: Arc<ZkSession>,
    pub(crate) name: LockName,
    pub(crate) path: String,
    pub(crate) czxid: i64,
    pub(crate) recipe: Recipe,
    /// A permit's: the lock directory's data version that its queuing multi wrote (a release
    /// that finds it unchanged knows nobody queued behind).
    pub(crate) dir_version: Option<i32>,
    /// A permit's: granted by its doorbell's ring (rather than by the count ahead).
    pub(crate) marked: bool,
}

impl Place {
    /// For a permit: refuses to wait where the entries `ahead` carry another number of
    /// permits (clients disagree on the semaphore's size).
    pub(crate) fn check_permits(&self, ahead: &[String]) -> Result<(), LockError> {
        let queued = ahead.iter().filter_map(|child| match crate::layout::recipe_of(child) {
            Some(Recipe::Permit(queued)) => Some(queued.get()),
            _ => None,
        });
        self.recipe.check_permits(&self.name, queued)
    }

    /// What the recipe's grant rule says with `ahead` (znode names, in queue order) before our
    /// znode: a reader waits only for writers.
    pub(crate) fn decide(&self, ahead: &[String]) -> Grant {
        self.recipe.grant_rule().decide(ahead, |child| !crate::layout::is_shared(child))
    }

    /// Whether the grant rule grants us once the znodes at `gone` (indices into `ahead`) have
    /// left ([`distlock_core::backend::GrantRule::granted_without`]).
    pub(crate) fn granted_without(&self, ahead: &[String], gone: &[usize]) -> bool {
        self.recipe.grant_rule().granted_without(ahead, gone, |child| !crate::layout::is_shared(child))
    }
}
