//! Reading and following an election's leader. Campaigning is the shared queue of
//! [`crate::queue`] (the `lock` queue, entries of recipe `E` carrying the candidate's value);
//! every script that changes the queue's granted head or its value publishes the new leader
//! (`<term> <value>`, empty for none) on `<prefix>:l:<name>`. An observer subscribes to that
//! channel and reads the leader once; after that each change costs it one message and no
//! read, whatever the number of observers and candidates. After a new connection (messages may
//! have been missed) it reads again.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_trait::async_trait;
use distlock_core::backend::{LeaderFeed, SessionLife, SessionSlot};
use distlock_core::{FencingToken, Leader, LockError, LockName};
use tokio::sync::{mpsc, watch};

use crate::config::RedisConfig;
use crate::link::{Link, Subscription};
use crate::scripts::{self, number, parts};
use crate::session::{retried, RedisSession};

/// A leader message or a leader reply's parts: `<term> <value>`, empty for none.
fn leader_from(message: &[u8]) -> Option<Leader> {
    let text = std::str::from_utf8(message).ok()?;
    let (term, value) = text.split_once(' ')?;
    Some(Leader { value: value.to_owned(), term: FencingToken::new(term.parse().ok()?) })
}

/// Reads the leader of `name` (`lua/leader.lua`; removes dead entries at the head on the way).
pub(crate) async fn read_leader(
    link: &Link,
    config: &RedisConfig,
    life: &SessionLife,
    count: impl Fn(),
    name: &LockName,
) -> Result<Option<Leader>, LockError> {
    let args = crate::args![crate::layout::script_prefix(&config.prefix), name.as_str()];
    let reply = retried(link, config, life, "read the leader", count, |mut connection| {
        let args = args.clone();
        async move { scripts::invoke::<redis::Value>(&scripts::LEADER, &args, &mut connection).await }
    })
    .await?;
    let parts = parts(&reply).unwrap_or_default();
    Ok(match parts.as_slice() {
        [term, value] => number(term)
            .map(|term| Leader { value: String::from_utf8_lossy(value).into_owned(), term: FencingToken::new(term) }),
        _ => None,
    })
}

/// Follows one election's leader channel.
pub(crate) struct LeaderChannel {
    link: Arc<Link>,
    config: Arc<RedisConfig>,
    requests: Arc<AtomicU64>,
    /// The client's session: reads go on the live one (a new one after an expiry).
    session: Arc<SessionSlot<RedisSession>>,
    name: LockName,
    messages: mpsc::UnboundedReceiver<Vec<u8>>,
    epoch: watch::Receiver<u64>,
    read_next: bool,
    _subscription: Subscription,
}

impl LeaderChannel {
    /// Subscribes to the leader channel of `name`.
    pub(crate) async fn subscribe(
        link: Arc<Link>,
        config: Arc<RedisConfig>,
        requests: Arc<AtomicU64>,
        session: Arc<SessionSlot<RedisSession>>,
        name: LockName,
    ) -> Result<Self, LockError> {
        let (sender, messages) = mpsc::unbounded_channel();
        let route = Arc::new(move |message: &[u8]| {
            let _ = sender.send(message.to_vec());
        });
        let channel = crate::layout::leader_channel(&config.prefix, name.as_str());
        let subscription = link
            .subscribe(channel, route)
            .await
            .map_err(|e| crate::errors::request_error("subscribe to the leader", &config.endpoint_label(), Some(e)))?;
        let mut epoch = link.epoch();
        epoch.borrow_and_update();
        Ok(LeaderChannel {
            link,
            config,
            requests,
            session,
            name,
            messages,
            epoch,
            read_next: true,
            _subscription: subscription,
        })
    }

    /// One read of the leader, on the client's live session (a new one after an expiry).
    async fn read(&self) -> Result<Option<Leader>, LockError> {
        let open = || RedisSession::open(self.link.clone(), self.config.clone(), self.requests.clone());
        let session = self.session.live(open).await?;
        read_leader(&self.link, &self.config, &session.life, || session.count(), &self.name).await
    }
}

#[async_trait]
impl LeaderFeed for LeaderChannel {
    async fn next(&mut self) -> Result<Option<Leader>, LockError> {
        loop {
            if self.read_next {
                let leader = self.read().await?;
                self.read_next = false;
                return Ok(leader);
            }
            tokio::select! {
                message = self.messages.recv() => match message {
                    Some(message) => return Ok(leader_from(&message)),
                    None => self.read_next = true,
                },
                _ = self.epoch.changed() => self.read_next = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_messages_parse() {
        assert_eq!(leader_from(b"17 host a"), Some(Leader { value: "host a".into(), term: FencingToken::new(17) }));
        assert_eq!(leader_from(b""), None);
        assert_eq!(leader_from(b"x y"), None);
    }
}
