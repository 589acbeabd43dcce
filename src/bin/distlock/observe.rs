//! `distlock observe NAME`: the leader of an election and every change of it, one line each,
//! until interrupted (like `etcdctl elect -l`).

use distlock::{Leader, LockUrl};
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::Exit;

fn line(name: &str, leader: &Option<Leader>, json: bool) -> String {
    match (leader, json) {
        (Some(l), false) => format!("leader {} (term {})", l.value, l.term),
        (None, false) => "no leader".to_owned(),
        (Some(l), true) => {
            serde_json::json!({ "name": name, "leader": { "value": l.value, "term": l.term.get() } }).to_string()
        }
        (None, true) => serde_json::json!({ "name": name, "leader": null }).to_string(),
    }
}

pub async fn observe(url: &str, name: &str, json: bool) -> Result<u8, Exit> {
    let (mut sigterm, mut sigint) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        _ => return Err(Exit::Unavailable("cannot install signal handlers".into())),
    };
    let elections = distlock::connect_url(&LockUrl::parse(url)?).await?;
    let followed = async {
        let mut observer = elections.observe(name).await?;
        loop {
            let leader = observer.next().await?;
            println!("{}", line(name, &leader, json));
        }
    };
    let outcome: Result<(), distlock::LockError> = tokio::select! {
        result = followed => result,
        _ = sigterm.recv() => Ok(()),
        _ = sigint.recv() => Ok(()),
    };
    if let Err(error) = elections.close().await {
        tracing::warn!(%error, "closing the session was not confirmed; the server ends it with its TTL");
    }
    outcome?;
    Ok(0)
}
