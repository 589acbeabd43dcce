//! A session's place in one queue: what queuing hands to the wait, and the wait to the hold.

use std::sync::Arc;

use distlock_core::backend::{Grant, Recipe};
use distlock_core::{LockError, LockName};
use etcd_client::KeyValue;

use crate::session::EtcdSession;

/// A session's place in one lock's queue.
#[derive(Debug)]
pub(crate) struct Place {
    pub(crate) session: Arc<EtcdSession>,
    pub(crate) name: LockName,
    /// The queue's key prefix: every key directly under it is in the queue.
    pub(crate) queue_prefix: String,
    /// What our key's name starts with ([`crate::layout::key_stem`]): its generations count
    /// per stem ([`crate::key_generations`]).
    pub(crate) key_stem: String,
    pub(crate) key: String,
    pub(crate) revision: i64,
    /// Whether our release must write our release marker ([`crate::release_marker::marker_of`] our key): not when our
    /// key was first from its creation (see [`crate::queue`]).
    pub(crate) writes_marker: bool,
    /// The recipe the key was queued for: it decides which key ahead blocks ours, and an
    /// election's hold can proclaim.
    pub(crate) recipe: Recipe,
}

impl Place {
    /// What the recipe's grant rule says, given the keys below ours read newest first (a read
    /// of the whole queue below, or the first few, which holds the predecessor), with those
    /// keys oldest first, as the answer indexes them.
    pub(crate) fn decide<'r>(&self, below: &[&'r KeyValue]) -> (Grant, Vec<&'r KeyValue>) {
        let ahead: Vec<&KeyValue> = below.iter().rev().copied().collect();
        (self.recipe.grant_rule().decide(&ahead, |kv| self.is_exclusive(kv)), ahead)
    }

    /// Whether the grant rule grants us once the key of `below` at `gone` (its index oldest
    /// first, as [`Place::decide`] answers) has left, with the rest still there
    /// ([`distlock_core::backend::GrantRule::granted_without`]).
    pub(crate) fn granted_without(&self, below: &[&KeyValue], gone: usize) -> bool {
        let ahead: Vec<&KeyValue> = below.iter().rev().copied().collect();
        self.recipe.grant_rule().granted_without(&ahead, &[gone], |kv| self.is_exclusive(kv))
    }

    /// Whether `kv`, a key of our queue, holds alone when it holds (all but a reader's).
    fn is_exclusive(&self, kv: &KeyValue) -> bool {
        !crate::layout::is_reader_key(&self.queue_prefix, kv.key())
    }

    /// The key ahead of ours that blocks it, where the rule waits behind one key (the key just
    /// below ours, or for a reader the nearest writer's), with how many keys of the read lie at
    /// or below it. `None`: nothing read blocks us, or the rule waits otherwise (a permit).
    pub(crate) fn blocker<'r>(&self, below: &[&'r KeyValue]) -> Option<(&'r KeyValue, usize)> {
        match self.decide(below) {
            (Grant::WaitBehind(index), ahead) => ahead.get(index).map(|kv| (*kv, index + 1)),
            _ => None,
        }
    }

    /// Whether waiting needs the whole queue below our key read, not its first few keys: a
    /// reader's blocker may lie below any number of readers. (A permit's reads give their own
    /// limit: N+1 keys tell where it stands, the whole queue whether every key carries its N.)
    pub(crate) fn reads_all_below(&self) -> bool {
        self.recipe == Recipe::Read
    }

    /// For a permit: refuses to wait where keys `below` ours carry another number of permits
    /// (clients disagree on the semaphore's size).
    pub(crate) fn check_permits(&self, below: &[&KeyValue]) -> Result<(), LockError> {
        let queued = below.iter().filter_map(|kv| crate::layout::permits_of(&self.queue_prefix, kv.key()));
        self.recipe.check_permits(&self.name, queued)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use etcd_client::PutOptions;

    use super::*;

    /// A place in a fresh queue on the tests' shared etcd, behind `ahead` keys written by a
    /// plain client, each with its create revision.
    pub(crate) async fn place_behind(ahead: &[&str]) -> (Place, etcd_client::Client, Vec<(String, i64)>) {
        place_of(Recipe::Lock, ahead).await
    }

    /// As [`place_behind`], in the queue of `recipe`: a reader's or a writer's key is named as
    /// theirs are (`r…`, `w…`), and so must `ahead`'s be there.
    pub(crate) async fn place_of(recipe: Recipe, ahead: &[&str]) -> (Place, etcd_client::Client, Vec<(String, i64)>) {
        let (session, client) = crate::session::shared_test_session().await;
        let name = LockName::new(&format!("marker-{:x}/job", session.lease)).expect("name");
        let queue_prefix = session.config.queue_prefix(name.as_str(), recipe);
        let kv = client.kv_client();
        let put = |key: String, options: Option<PutOptions>| {
            let mut kv = kv.clone();
            async move {
                let revision =
                    kv.put(key.as_str(), "", options).await.expect("put").header().expect("header").revision();
                (key, revision)
            }
        };
        let mut keys = Vec::new();
        for key in ahead {
            keys.push(put(format!("{queue_prefix}{key}"), None).await);
        }
        let kind = match recipe {
            Recipe::Read => "r",
            Recipe::Write => "w",
            _ => "",
        };
        let key_stem = format!("{queue_prefix}{kind}");
        let own_key = format!("{key_stem}{:x}", session.lease);
        let (key, revision) = put(own_key, Some(PutOptions::new().with_lease(session.lease))).await;
        let place = Place { session, name, queue_prefix, key_stem, key, revision, writes_marker: true, recipe };
        (place, client, keys)
    }
}
