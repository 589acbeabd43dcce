//! `distlock status NAME`: the holder and waiters of a lock, as a table or JSON.

use std::time::SystemTime;

use distlock::{LockUrl, QueueEntry};

use crate::exit::Exit;

fn age_secs(entry: &QueueEntry) -> Option<f64> {
    entry.since.and_then(|since| SystemTime::now().duration_since(since).ok()).map(|d| d.as_secs_f64())
}

pub async fn status(url: &str, name: &str, json: bool) -> Result<u8, Exit> {
    let locks = distlock::connect_url(&LockUrl::parse(url)?).await?;
    let info = locks.inspect(name).await?;
    let entries: Vec<(&str, &QueueEntry)> =
        info.holder.iter().map(|h| ("holder", h)).chain(info.waiters.iter().map(|w| ("waiter", w))).collect();
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .enumerate()
            .map(|(position, (role, e))| {
                serde_json::json!({
                    "position": position,
                    "role": role,
                    "owner": e.owner,
                    "fencing_token": e.token.get(),
                    "age_s": age_secs(e),
                })
            })
            .collect();
        let doc = serde_json::json!({ "name": name, "held": info.holder.is_some(), "queue": rows });
        println!("{doc}");
    } else if entries.is_empty() {
        println!("{name}: free (no holder, no waiters)");
    } else {
        println!("{name}: {} waiting", info.waiters.len());
        println!("{:<4} {:<7} {:>14} {:>9}  owner", "pos", "role", "fencing_token", "age");
        for (position, (role, e)) in entries.iter().enumerate() {
            let age = age_secs(e).map(|a| format!("{a:.1}s")).unwrap_or_else(|| "-".into());
            println!("{position:<4} {role:<7} {:>14} {age:>9}  {}", e.token, e.owner);
        }
    }
    Ok(0)
}
