//! Where distlock keeps things in Redis (the scripts in `lua/` use the same names; `lua/lib.lua`
//! describes each key): every key and channel starts with `<prefix>:`.
//!
//! | key | what |
//! |---|---|
//! | `<prefix>:s:<session>` | a session, with the session's TTL |
//! | `<prefix>:h:<session>` | the session's entries (queue key → token), same TTL |
//! | `<prefix>:q:<queue>:<name>` | a queue (`lock`, `elect`, `rw`, `sem`): sorted set, session → token |
//! | `<prefix>:e:<queue>:<name>` | its entries' records: recipe, granted, value |
//! | `<prefix>:t:<name>` | the name's fencing token counter (kept: tokens never repeat) |

use distlock_core::backend::Recipe;
use distlock_core::EntryKind;

/// The queue of a name that entries of `recipe` join: the lock's (`lock`), the election's
/// (`elect`), the read-write lock's (`rw`), the semaphore's (`sem`).
pub fn queue_kind(recipe: Recipe) -> &'static str {
    match recipe {
        Recipe::Election => "elect",
        Recipe::Read | Recipe::Write => "rw",
        Recipe::Permit(_) => "sem",
        _ => "lock",
    }
}

/// Every kind of queue, in the order `inspect` looks at a name's queues.
pub const QUEUE_KINDS: [&str; 4] = ["lock", "elect", "rw", "sem"];

/// The key of a queue: `<prefix>:q:<kind>:<name>`.
///
/// ```
/// assert_eq!(distlock_redis::layout::queue_key("app", "lock", "jobs/a"), "app:q:lock:jobs/a");
/// ```
pub fn queue_key(prefix: &str, kind: &str, name: &str) -> String {
    format!("{prefix}:q:{kind}:{name}")
}

/// The lock name a queue key is for, if it is one of `prefix`'s.
///
/// ```
/// assert_eq!(distlock_redis::layout::name_of("app", "app:q:rw:jobs/a"), Some("jobs/a"));
/// assert_eq!(distlock_redis::layout::name_of("app", "app:t:jobs/a"), None);
/// ```
pub fn name_of<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(":q:")?;
    QUEUE_KINDS.iter().find_map(|kind| rest.strip_prefix(kind)?.strip_prefix(':'))
}

/// The scripts' first argument: the key prefix with its `:` (`lua/lib.lua`'s `P`).
pub(crate) fn script_prefix(prefix: &str) -> String {
    format!("{prefix}:")
}

/// The pattern of every queue key under `prefix` (for `SCAN`).
pub(crate) fn queue_pattern(prefix: &str) -> String {
    let escaped: String =
        prefix.chars().flat_map(|c| if "*?[]\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect();
    format!("{escaped}:q:*")
}

/// The key of a session: `<prefix>:s:<session>`.
pub fn session_key(prefix: &str, session: &str) -> String {
    format!("{prefix}:s:{session}")
}

/// The channel that tells a session of its grants.
pub(crate) fn wake_channel(prefix: &str, session: &str) -> String {
    format!("{prefix}:w:{session}")
}

/// The channel a session publishes an empty message on (nobody listens) before it waits for
/// replicas to acknowledge what came before (`replicas=N`): a write of its own in the
/// replication stream, after a grant another client's script made.
pub(crate) fn replication_mark_channel(prefix: &str, session: &str) -> String {
    format!("{prefix}:r:{session}")
}

/// The channel that tells an election's observers of its leader.
pub(crate) fn leader_channel(prefix: &str, name: &str) -> String {
    format!("{prefix}:l:{name}")
}

/// The char that stands for `recipe` in an entry's record.
pub(crate) fn recipe_char(recipe: Recipe) -> &'static str {
    match recipe {
        Recipe::Election => "E",
        Recipe::Read => "R",
        Recipe::Write => "W",
        Recipe::Permit(_) => "P",
        _ => "L",
    }
}

/// What `inspect` calls the entry with `record`.
pub(crate) fn entry_kind(record: &[u8]) -> EntryKind {
    match record.first() {
        Some(b'R') => EntryKind::Read,
        Some(b'W') => EntryKind::Write,
        Some(b'P') => {
            let permits = std::str::from_utf8(record.get(2..).unwrap_or_default()).ok().and_then(|p| p.parse().ok());
            EntryKind::Permit(permits.unwrap_or(1))
        }
        _ => EntryKind::Exclusive,
    }
}
