//! A session's place in one queue: what queuing hands to the wait, and the wait to the hold.

use std::sync::Arc;

use distlock_core::{backend::Recipe, LockName};

use crate::session::EtcdSession;

/// A session's place in one lock's queue.
#[derive(Debug)]
pub(crate) struct Place {
    pub(crate) session: Arc<EtcdSession>,
    pub(crate) name: LockName,
    pub(crate) queue_prefix: String,
    pub(crate) key: String,
    pub(crate) revision: i64,
    /// Whether our release must write our release marker ([`crate::release_marker::marker_of`] our key): not when our
    /// key was first from its creation (see [`crate::queue`]).
    pub(crate) writes_marker: bool,
    /// The recipe the key was queued for: an election's hold can proclaim.
    pub(crate) recipe: Recipe,
}

#[cfg(test)]
pub(crate) mod testing {
    use etcd_client::PutOptions;

    use super::*;

    /// A place in a fresh queue on the tests' shared etcd, behind `ahead` keys written by a
    /// plain client, each with its create revision.
    pub(crate) async fn place_behind(ahead: &[&str]) -> (Place, etcd_client::Client, Vec<(String, i64)>) {
        let (session, client) = crate::session::shared_test_session().await;
        let name = LockName::new(&format!("marker-{:x}/job", session.lease)).expect("name");
        let queue_prefix = session.config.lock_prefix(name.as_str());
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
        let own_key = format!("{queue_prefix}{:x}", session.lease);
        let (key, revision) = put(own_key, Some(PutOptions::new().with_lease(session.lease))).await;
        (Place { session, name, queue_prefix, key, revision, writes_marker: true, recipe: Recipe::Lock }, client, keys)
    }
}
