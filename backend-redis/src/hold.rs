//! A granted place as a hold: its loss signal (fired by the session's end, by silence, and by
//! the keepalive finding the entry deleted by someone else), the fenced release, and an
//! election's proclaim.

use std::sync::Arc;

use async_trait::async_trait;
use distlock_core::backend::{proclaimed, LossSignal, Recipe, ServerHold, ServerProclaim, ServerRelease};
use distlock_core::{FencingToken, LockError, LossReason};

use crate::queue::Place;
use crate::scripts;

/// Turns a granted place into a hold.
pub(crate) fn grant(place: Place) -> ServerHold {
    let token = FencingToken::new(place.token);
    let loss = LossSignal::new(place.name.clone(), token);
    let registration = place.session.life.holds().register(loss.clone());
    if place.session.life.is_ended() {
        loss.fire(LossReason::SessionExpired);
    }
    let place = Arc::new(place);
    let proclaim = (place.recipe == Recipe::Election)
        .then(|| Arc::new(RedisProclaim { place: place.clone() }) as Arc<dyn ServerProclaim>);
    ServerHold { token, loss, proclaim, release: Box::new(RedisRelease { place, registration }) }
}

/// Removes the holder's entry, fenced by its token, admitting whoever is next.
struct RedisRelease {
    place: Arc<Place>,
    registration: u64,
}

#[async_trait]
impl ServerRelease for RedisRelease {
    async fn release(self: Box<Self>) -> Result<(), LockError> {
        let place = self.place;
        let session = place.session.clone();
        session.life.holds().remove(self.registration);
        let error = match Place::leave(&session, place.kind, &place.name, place.token, "release the lock").await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        // Retried in the background; the session queues there again only after.
        let (kind, name, token) = (place.kind, place.name.clone(), place.token);
        let retry = session.clone();
        session.cleanups.start(&place.queue).retry_until_done(format!("{} ({token})", place.queue), move || {
            let (session, name) = (retry.clone(), name.clone());
            async move { Place::leave(&session, kind, &name, token, "release the lock").await }
        });
        Err(LockError::ReleaseUnconfirmed {
            name: place.name.to_string(),
            token: FencingToken::new(token),
            backstop: session.config.ttl,
            source: Some(Box::new(error)),
        })
    }
}

/// Replaces a leader's value, fenced by its token (`lua/proclaim.lua`); observers hear it.
#[derive(Debug)]
struct RedisProclaim {
    place: Arc<Place>,
}

#[async_trait]
impl ServerProclaim for RedisProclaim {
    async fn proclaim(&self, value: &[u8]) -> Result<(), LockError> {
        let place = &self.place;
        let args = crate::args![place.name.as_str(), place.session.id, place.token.to_string(), value];
        let written =
            place.session.script::<i64>("proclaim a new value", &scripts::PROCLAIM, args).await.map(|n| n == 1);
        proclaimed(written, &place.queue, FencingToken::new(place.token))
    }
}
