//! A granted place as a hold: its loss signal, a watch on its own znode (after a grace period),
//! the release (with the directory record), and an election's proclaim.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distlock_core::{
    backend::{proclaimed, LossSignal, Recipe, ServerHold, ServerProclaim, ServerRelease},
    FencingToken, LockError, LossReason,
};
use tokio_util::sync::CancellationToken;
use zookeeper_client::{Error as ZkError, EventType, MultiWriteError};

use crate::layout::is_shared;
use crate::place::Place;
use crate::queue::delete;
use crate::queue::permits::PermitHold;
use crate::session::ZkSession;

/// How long a hold lasts before its own znode gets a deletion watch (short holds then cost
/// exactly the queuing and the release).
const OWN_NODE_WATCH_GRACE: Duration = Duration::from_millis(200);

/// The holder's release: one multi deletes its znode and writes the znode's name as the lock
/// directory's data (see [`crate::queue::wait::names_any`]). A znode already gone (or gone with the
/// session) counts as released. If the directory's data is not ours to write (a directory that
/// another client made with its own ACL), the znode is deleted alone, and so are the session's
/// later releases. A reader's znode is deleted alone: its name would tell a waiter nothing.
pub(crate) async fn release_as_holder(session: &ZkSession, path: &str) -> Result<(), LockError> {
    let writes_name = |(_, child): &(&str, &str)| !session.directory_data_refused() && !is_shared(child);
    let Some((dir, child)) = path.rsplit_once('/').filter(writes_name) else {
        return delete(session, path, "release the lock").await;
    };
    let released = session
        .request("release the lock", |client| {
            let (path, dir, child) = (path.to_owned(), dir.to_owned(), child.to_owned());
            async move {
                let mut multi = client.new_multi_writer();
                multi.add_delete(&path, None)?;
                multi.add_set_data(&dir, child.as_bytes(), None)?;
                match multi.commit().await {
                    Ok(_) | Err(MultiWriteError::OperationFailed { index: 0, source: ZkError::NoNode }) => Ok(None),
                    // The directory's data could not be written: the znode is still there.
                    Err(MultiWriteError::OperationFailed { index: 1, source }) => Ok(Some(source)),
                    Err(e) => Err(ZkError::from(e)),
                }
            }
        })
        .await;
    match released {
        Ok(None) | Err(LockError::SessionExpired { .. }) => Ok(()),
        Ok(Some(refused)) => {
            if refused == ZkError::NoAuth {
                session.refuse_directory_data(dir);
            }
            delete(session, path, "release the lock").await
        }
        Err(error) => Err(error),
    }
}

/// Turns the first place into a hold: a loss signal registered with the session, a watch on
/// our own znode (after a grace period), and the release.
pub(crate) fn grant(place: Place) -> ServerHold {
    let token = FencingToken::new(place.czxid as u64);
    let loss = LossSignal::new(place.name.clone(), token);
    let registration = place.session.life.holds().register(loss.clone());
    if place.session.life.is_ended() {
        loss.fire(LossReason::SessionExpired);
    }
    let released = CancellationToken::new();
    let permit = PermitHold::of(&place);
    tokio::spawn(watch_own_node(place.session.clone(), place.path.clone(), loss.clone(), released.clone()));
    let proclaim = (place.recipe == Recipe::Election).then(|| {
        Arc::new(ZkProclaim { session: place.session.clone(), path: place.path.clone(), token })
            as Arc<dyn ServerProclaim>
    });
    ServerHold {
        token,
        loss,
        proclaim,
        release: Box::new(ZkRelease {
            session: place.session,
            path: place.path,
            token,
            registration,
            released,
            permit,
        }),
    }
}

/// Fires the loss signal if our znode is deleted by anyone but our own release.
async fn watch_own_node(session: Arc<ZkSession>, path: String, loss: LossSignal, released: CancellationToken) {
    let deleted = async {
        tokio::time::sleep(OWN_NODE_WATCH_GRACE).await;
        loop {
            let watched = crate::queue::wait::watch_deletion(&session, &path, "watch own znode").await;
            match watched {
                Ok(None) => return,
                Ok(Some(watcher)) => {
                    if watcher.changed().await.event_type == EventType::NodeDeleted {
                        return;
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    };
    tokio::select! {
        _ = released.cancelled() => {}
        _ = loss.fired() => {}
        _ = session.life.ended() => {}
        () = deleted => {
            if !released.is_cancelled() && !session.life.is_ended() {
                loss.fire(LossReason::EntryDeleted);
            }
        }
    }
}

/// Replaces a leader's value: a setData on our own znode, whose path is unique to this term, so
/// it lands only while our znode exists.
#[derive(Debug)]
struct ZkProclaim {
    session: Arc<ZkSession>,
    path: String,
    token: FencingToken,
}

#[async_trait]
impl ServerProclaim for ZkProclaim {
    async fn proclaim(&self, value: &[u8]) -> Result<(), LockError> {
        let written = self
            .session
            .request("proclaim a new value", |client| {
                let (path, value) = (self.path.clone(), value.to_vec());
                async move {
                    match client.set_data(&path, &value, None).await {
                        Ok(_) => Ok(true),
                        Err(ZkError::NoNode) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            })
            .await;
        proclaimed(written, &self.path, self.token)
    }
}

/// Deletes the holder's znode ([`release_as_holder`]).
struct ZkRelease {
    session: Arc<ZkSession>,
    path: String,
    token: FencingToken,
    registration: u64,
    released: CancellationToken,
    /// A permit's release hands it on ([`crate::queue::permits::release`]).
    permit: Option<PermitHold>,
}

/// Releases the hold at `path`: a permit's way, or [`release_as_holder`].
async fn release_hold(session: &ZkSession, path: &str, permit: Option<PermitHold>) -> Result<(), LockError> {
    match permit {
        Some(permit) => crate::queue::permits::release(session, path, permit).await,
        None => release_as_holder(session, path).await,
    }
}

#[async_trait]
impl ServerRelease for ZkRelease {
    async fn release(self: Box<Self>) -> Result<(), LockError> {
        self.released.cancel();
        self.session.life.holds().remove(self.registration);
        let error = match release_hold(&self.session, &self.path, self.permit).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        // Retried in the background; the session queues in this directory again only after.
        let dir = self.path.rsplit_once('/').map_or(self.path.as_str(), |(dir, _)| dir);
        let (session, path, permit) = (self.session.clone(), self.path.clone(), self.permit);
        self.session.cleanups.start(dir).retry_until_done(self.path.clone(), move || {
            let (session, path) = (session.clone(), path.clone());
            async move { release_hold(&session, &path, permit).await }
        });
        Err(LockError::ReleaseUnconfirmed {
            name: self.path.clone(),
            token: self.token,
            backstop: self.session.timeout,
            source: Some(Box::new(error)),
        })
    }
}
