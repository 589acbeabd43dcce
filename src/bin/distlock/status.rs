//! `distlock status NAME` (or `--all PREFIX`): the holders and waiters of locks, read-write
//! locks and semaphores, each entry with its kind and fencing token, as a table or JSON.

use distlock::{EntryKind, LockInfo, LockUrl, QueueEntry};

use crate::exit::Exit;

fn age_secs(entry: &QueueEntry) -> Option<f64> {
    entry.age().map(|d| d.as_secs_f64())
}

pub async fn status(url: &str, name: &str, all: bool, json: bool) -> Result<u8, Exit> {
    let locks = distlock::connect_url(&LockUrl::parse(url)?).await?;
    let read = match all {
        true => locks.inspect_all(name).await,
        false => locks.inspect(name).await.map(|info| vec![info]),
    };
    // Nothing of a status call stays on the server: end its session now, not at its TTL.
    if let Err(error) = locks.close().await {
        tracing::warn!(%error, "closing the session was not confirmed; the server ends it with its TTL");
    }
    let infos = read?;
    if json {
        let docs: Vec<serde_json::Value> = infos.iter().map(to_json).collect();
        match all {
            true => println!("{}", serde_json::json!({ "prefix": name, "locks": docs })),
            false => println!("{}", docs.first().cloned().unwrap_or_default()),
        }
    } else if all && infos.is_empty() {
        println!("no lock under {name:?} is held or awaited");
    } else {
        for (i, info) in infos.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_table(info);
        }
    }
    Ok(0)
}

/// The holders first, then the waiters, each with its role.
fn queue(info: &LockInfo) -> Vec<(&'static str, &QueueEntry)> {
    info.holders().map(|h| ("holder", h)).chain(info.waiters.iter().map(|w| ("waiter", w))).collect()
}

/// What the queue is of, for people and for JSON: `lock`, `read-write lock` or `semaphore`,
/// and a semaphore's number of permits.
fn what(info: &LockInfo) -> (&'static str, Option<u32>) {
    match info.kind() {
        Some(EntryKind::Read | EntryKind::Write) => ("read-write lock", None),
        Some(EntryKind::Permit(permits)) => ("semaphore", Some(permits)),
        _ => ("lock", None),
    }
}

fn to_json(info: &LockInfo) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = queue(info)
        .iter()
        .enumerate()
        .map(|(position, (role, e))| {
            serde_json::json!({
                "position": position,
                "role": role,
                "kind": e.kind.to_string(),
                "owner": e.owner,
                "fencing_token": e.token.get(),
                "age_s": age_secs(e),
            })
        })
        .collect();
    let (kind, permits) = what(info);
    serde_json::json!({
        "name": info.name.as_str(),
        "kind": kind,
        "permits": permits,
        "held": info.holder.is_some(),
        "holders": info.holders().count(),
        "queue": rows,
    })
}

fn print_table(info: &LockInfo) {
    let name = info.name.as_str();
    let entries = queue(info);
    if entries.is_empty() {
        println!("{name}: free (no holder, no waiters)");
        return;
    }
    let holding = info.holders().count();
    match what(info) {
        ("lock", _) => println!("{name}: lock, {} waiting", info.waiters.len()),
        (kind, Some(permits)) => {
            println!("{name}: {kind} of {permits} permits, {holding} held, {} waiting", info.waiters.len())
        }
        (kind, None) => println!("{name}: {kind}, {holding} holding, {} waiting", info.waiters.len()),
    }
    println!("{:<4} {:<7} {:<13} {:>14} {:>9}  owner", "pos", "role", "kind", "fencing_token", "age");
    for (position, (role, e)) in entries.iter().enumerate() {
        let age = age_secs(e).map(|a| format!("{a:.1}s")).unwrap_or_else(|| "-".into());
        println!("{position:<4} {role:<7} {:<13} {:>14} {age:>9}  {}", e.kind.to_string(), e.token, e.owner);
    }
}
