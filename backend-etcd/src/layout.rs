//! Where distlock's entries live in etcd, for the backend and for tools that read the same keys
//! (the test harness, operators' scripts). The layout is that of etcd's Go `concurrency`
//! package, so Go services, `etcdctl lock` and `etcdctl elect` share queues with distlock:
//!
//! - the queue of lock or election `name` is the keys `<prefix>/<name>/<lease id hex>`, one per
//!   session, ordered by create revision; the first holds (leads); a key's value is empty for a
//!   lock and the candidate's value for an election. After a release whose reply was lost, the
//!   session's later keys in that queue are `<lease id hex>_<n>` (`n` counting such releases),
//!   so that the lost delete, should the server apply it late, finds no key of ours to remove;
//! - the queue of read-write lock `name` is the keys `<prefix>//rw/<name>//r<lease id hex>`
//!   (readers) and `...//w<lease id hex>` (writers), ordered by create revision: apart from the
//!   lock's queue, so a Go Mutex on `name` neither sees them nor is seen by them;
//! - the queue of semaphore `name` is the keys `<prefix>//sem/<name>//p<permits>-<lease id hex>`,
//!   ordered by create revision;
//! - a permit waiter's mailbox is `<prefix>//granted/<lease id hex>/`: a releasing permit
//!   holder puts `<mailbox><create revision>` there for the waiter its release admits (value
//!   `granted`) and for the waiter that is first in line after it (value `first`), each on that
//!   waiter's lease;
//! - a holder that waited writes its release marker `<prefix>//released/<name>//<lease id hex>`
//!   in the Txn that deletes its key (the empty segment keeps markers out of every queue).

use distlock_core::backend::Recipe;
use distlock_core::EntryKind;

/// The key prefix of `name`'s queue: `<prefix>/<name>/` (Go's `concurrency` `pfx`), or
/// `<name>/` without a prefix.
///
/// ```
/// assert_eq!(distlock_etcd::layout::queue_prefix("p", "x/y"), "p/x/y/");
/// assert_eq!(distlock_etcd::layout::queue_prefix("", "x"), "x/");
/// ```
pub fn queue_prefix(prefix: &str, name: &str) -> String {
    match prefix {
        "" => format!("{name}/"),
        prefix => format!("{prefix}/{name}/"),
    }
}

/// The key a session with lease `lease` queues with in the queue at `queue_prefix`: generation
/// 0 is Go's key, `<lease id hex>`; each later generation (after a release of the session in
/// that queue went unconfirmed) is `<lease id hex>_<generation>`.
///
/// ```
/// use distlock_etcd::layout::queue_key;
/// assert_eq!(queue_key("p/x/", 0x694d, 0), "p/x/694d");
/// assert_eq!(queue_key("p/x/", 0x694d, 2), "p/x/694d_2");
/// ```
pub fn queue_key(queue_prefix: &str, lease: i64, generation: u32) -> String {
    match generation {
        0 => format!("{queue_prefix}{lease:x}"),
        n => format!("{queue_prefix}{lease:x}_{n}"),
    }
}

/// Whether `key` is in the queue at `queue_prefix`: `<queue_prefix><lease id hex>`, not a key of
/// a lock named below this one (`<queue_prefix>nightly/<lease id hex>`).
///
/// ```
/// use distlock_etcd::layout::is_queue_key;
/// assert!(is_queue_key("p/jobs/", b"p/jobs/694d7a1b"));
/// assert!(!is_queue_key("p/jobs/", b"p/jobs/nightly/694d7a1b"));
/// ```
pub fn is_queue_key(queue_prefix: &str, key: &[u8]) -> bool {
    key.strip_prefix(queue_prefix.as_bytes()).is_some_and(|rest| !rest.is_empty() && !rest.contains(&b'/'))
}

/// The lock name and entry (`<lease id hex>` or `<lease id hex>_<generation>`) of a queue key
/// under `root` (`<prefix>/`, or empty without a prefix): `None` for any other key (a release
/// marker, a foreign key).
///
/// ```
/// use distlock_etcd::layout::lock_of;
/// assert_eq!(lock_of("p/", "p/jobs/nightly/694d"), Some(("jobs/nightly", "694d")));
/// assert_eq!(lock_of("p/", "p/jobs/694d_1"), Some(("jobs", "694d_1")));
/// assert_eq!(lock_of("p/", "p//released/jobs//694d"), None);
/// ```
pub fn lock_of<'k>(root: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    let (name, entry) = key.strip_prefix(root)?.rsplit_once('/')?;
    let is_name = !name.is_empty() && name.split('/').all(|segment| !segment.is_empty());
    (is_name && lease_entry(entry).is_some()).then_some((name, entry))
}

/// The lease id (hex) of a queue entry shaped `<lease id hex>` or `<lease id hex>_<generation>`;
/// `None` for any other shape.
fn lease_entry(entry: &str) -> Option<&str> {
    let (lease, generation) = entry.split_once('_').unwrap_or((entry, "1"));
    let is_lease = !lease.is_empty() && lease.len() <= 16 && lease.bytes().all(|b| b.is_ascii_hexdigit());
    let is_generation = !generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit());
    (is_lease && is_generation).then_some(lease)
}

/// The key prefix of read-write lock `name`'s queue, where its readers and writers queue
/// together: `<prefix>//rw/<name>//` (`/rw/<name>//` without a prefix). The empty segments keep
/// it apart from every lock's and election's queue (Go's `concurrency` layout, which a Go Mutex
/// or `etcdctl lock` on `name` uses) and from the read-write locks named below `name`.
///
/// ```
/// assert_eq!(distlock_etcd::layout::read_write_prefix("p", "x/y"), "p//rw/x/y//");
/// assert_eq!(distlock_etcd::layout::read_write_prefix("", "x"), "/rw/x//");
/// ```
pub fn read_write_prefix(prefix: &str, name: &str) -> String {
    match prefix {
        "" => format!("/rw/{name}//"),
        prefix => format!("{prefix}//rw/{name}//"),
    }
}

/// The key prefix of semaphore `name`'s queue: `<prefix>//sem/<name>//` (`/sem/<name>//`
/// without a prefix), apart from every other recipe's queue as [`read_write_prefix`] is.
///
/// ```
/// assert_eq!(distlock_etcd::layout::semaphore_prefix("p", "api"), "p//sem/api//");
/// ```
pub fn semaphore_prefix(prefix: &str, name: &str) -> String {
    match prefix {
        "" => format!("/sem/{name}//"),
        prefix => format!("{prefix}//sem/{name}//"),
    }
}

/// Where the queues of every read-write lock (`tag` `rw`) or semaphore (`sem`) begin:
/// `<prefix>//<tag>/`, or `/<tag>/` without a prefix.
fn recipe_root(prefix: &str, tag: &str) -> String {
    match prefix {
        "" => format!("/{tag}/"),
        prefix => format!("{prefix}//{tag}/"),
    }
}

/// The key range holding the queues of every read-write lock (`Recipe::Read`) or semaphore
/// (`Recipe::Permit`) named `dir` or below it (every one with `None`); for any other recipe,
/// every lock's and election's ([`queue_prefix`] of `dir`, or everything under `<prefix>/`).
///
/// ```
/// use distlock_core::backend::Recipe;
/// use distlock_etcd::layout::queues_under;
/// assert_eq!(queues_under("p", Some("jobs"), Recipe::Read), "p//rw/jobs/");
/// assert_eq!(queues_under("p", None, Recipe::Lock), "p/");
/// ```
pub fn queues_under(prefix: &str, dir: Option<&str>, recipe: Recipe) -> String {
    let root = match recipe {
        Recipe::Read | Recipe::Write => recipe_root(prefix, "rw"),
        Recipe::Permit(_) => recipe_root(prefix, "sem"),
        _ => return dir.map_or_else(|| lock_root(prefix), |dir| queue_prefix(prefix, dir)),
    };
    match dir {
        Some(dir) => format!("{root}{dir}/"),
        None => root,
    }
}

/// The name and kind of a queue key of any recipe under `prefix` (see the module comment);
/// `None` for any other key (a release marker, a foreign key).
///
/// ```
/// use distlock_core::EntryKind;
/// use distlock_etcd::layout::entry_of;
/// assert_eq!(entry_of("p", "p/jobs/694d"), Some(("jobs", EntryKind::Exclusive)));
/// assert_eq!(entry_of("p", "p//rw/a/b//r694d"), Some(("a/b", EntryKind::Read)));
/// assert_eq!(entry_of("p", "p//sem/api//p4-694d_1"), Some(("api", EntryKind::Permit(4))));
/// assert_eq!(entry_of("p", "p//released/jobs//694d"), None);
/// ```
pub fn entry_of<'k>(prefix: &str, key: &'k str) -> Option<(&'k str, EntryKind)> {
    let is_lease = |entry: &str| lease_entry(entry).is_some();
    if let Some(rest) = key.strip_prefix(&recipe_root(prefix, "rw")) {
        let (name, entry) = rest.rsplit_once("//")?;
        let kind = match entry.split_at_checked(1)? {
            ("r", lease) if is_lease(lease) => EntryKind::Read,
            ("w", lease) if is_lease(lease) => EntryKind::Write,
            _ => return None,
        };
        return Some((name, kind));
    }
    if let Some(rest) = key.strip_prefix(&recipe_root(prefix, "sem")) {
        let (name, entry) = rest.rsplit_once("//")?;
        let (permits, lease) = entry.strip_prefix('p')?.split_once('-')?;
        let permits =
            permits.parse().ok().filter(|_| permits.bytes().all(|b| b.is_ascii_digit()) && is_lease(lease))?;
        return Some((name, EntryKind::Permit(permits)));
    }
    lock_of(&lock_root(prefix), key).map(|(name, _)| (name, EntryKind::Exclusive))
}

/// The lease id (hex) in a queue key of any recipe: its last segment less a reader's `r`, a
/// writer's `w` or a permit's `p<permits>-` before it and a key generation after it; `None` for
/// a last segment of another shape. A release marker ends in its writer's lease id too: tell
/// markers apart by [`release_marker_prefix`] first where it matters.
///
/// ```
/// use distlock_etcd::layout::lease_of;
/// assert_eq!(lease_of("p/jobs/694d_2"), Some("694d"));
/// assert_eq!(lease_of("p//rw/x//w694d"), Some("694d"));
/// assert_eq!(lease_of("p//sem/api//p4-694d"), Some("694d"));
/// assert_eq!(lease_of("p/jobs/nightly"), None);
/// ```
pub fn lease_of(key: &str) -> Option<&str> {
    let entry = key.rsplit('/').next()?;
    let entry = match entry.split_at_checked(1)? {
        ("r" | "w", rest) => rest,
        ("p", rest) => rest.split_once('-').filter(|(permits, _)| permits.bytes().all(|b| b.is_ascii_digit()))?.1,
        _ => entry,
    };
    lease_entry(entry)
}

/// Where every lock's and election's queue begins: `<prefix>/`, or nothing without a prefix.
fn lock_root(prefix: &str) -> String {
    match prefix {
        "" => String::new(),
        prefix => format!("{prefix}/"),
    }
}

/// The number of permits a permit's key in the queue at `queue_prefix` carries
/// (`p<permits>-<lease id hex>`, see [`key_stem`]); `None` for any other key.
///
/// ```
/// use distlock_etcd::layout::permits_of;
/// assert_eq!(permits_of("p//sem/api//", b"p//sem/api//p4-694d"), Some(4));
/// assert_eq!(permits_of("p//sem/api//", b"p//sem/api//694d"), None);
/// ```
pub fn permits_of(queue_prefix: &str, key: &[u8]) -> Option<u32> {
    let entry = std::str::from_utf8(key.strip_prefix(queue_prefix.as_bytes())?).ok()?;
    let (permits, _) = entry.strip_prefix('p')?.split_once('-')?;
    permits.bytes().all(|b| b.is_ascii_digit()).then(|| permits.parse().ok()).flatten()
}

/// What the keys of a `recipe`'s entries start with in the queue at `queue_prefix`: a reader's
/// `r`, a writer's `w`, a permit's `p<permits>-` before the lease id; a lock's and an
/// election's nothing (Go's layout).
///
/// ```
/// use distlock_core::backend::Recipe;
/// use distlock_etcd::layout::key_stem;
/// assert_eq!(key_stem("p//rw/x//", Recipe::Read), "p//rw/x//r");
/// assert_eq!(key_stem("p/x/", Recipe::Lock), "p/x/");
/// ```
pub fn key_stem(queue_prefix: &str, recipe: Recipe) -> String {
    match recipe {
        Recipe::Read => format!("{queue_prefix}r"),
        Recipe::Write => format!("{queue_prefix}w"),
        Recipe::Permit(permits) => format!("{queue_prefix}p{permits}-"),
        _ => queue_prefix.to_owned(),
    }
}

/// Whether `key`, in the queue at `queue_prefix`, is a reader's (see [`key_stem`]): it holds
/// beside other readers, so its release says nothing about who is first.
///
/// ```
/// use distlock_etcd::layout::is_reader_key;
/// assert!(is_reader_key("p//rw/x//", b"p//rw/x//r694d"));
/// assert!(!is_reader_key("p//rw/x//", b"p//rw/x//w694d"));
/// ```
pub fn is_reader_key(queue_prefix: &str, key: &[u8]) -> bool {
    queue_prefix.ends_with("//")
        && key.strip_prefix(queue_prefix.as_bytes()).is_some_and(|entry| entry.starts_with(b"r"))
}

/// The mailbox of the session with lease `lease`, where releasing permit holders tell its
/// waiting permits that they are granted or first in line (see the module's comment): apart
/// from every queue, as release markers are.
///
/// ```
/// use distlock_etcd::layout::permit_mailbox;
/// assert_eq!(permit_mailbox("p", 0x694d), "p//granted/694d/");
/// assert_eq!(permit_mailbox("", 0x694d), "/granted/694d/");
/// ```
pub fn permit_mailbox(prefix: &str, lease: i64) -> String {
    format!("{}{lease:x}/", permit_mailboxes(prefix))
}

/// Where every session's permit mailbox lies: `<prefix>//granted/`.
///
/// ```
/// assert_eq!(distlock_etcd::layout::permit_mailboxes("p"), "p//granted/");
/// ```
pub fn permit_mailboxes(prefix: &str) -> String {
    recipe_root(prefix, "granted")
}

/// The key in `lease`'s mailbox that speaks of its permit whose queue key was created at
/// `revision`.
///
/// ```
/// use distlock_etcd::layout::permit_mark;
/// assert_eq!(permit_mark("p", 0x694d, 1042), "p//granted/694d/1042");
/// ```
pub fn permit_mark(prefix: &str, lease: i64, revision: i64) -> String {
    format!("{}{revision}", permit_mailbox(prefix, lease))
}

/// Where the release markers live: `<prefix>//released/`, or `/released/` without a prefix.
///
/// ```
/// assert_eq!(distlock_etcd::layout::release_marker_prefix("p"), "p//released/");
/// ```
pub fn release_marker_prefix(prefix: &str) -> String {
    match prefix {
        "" => "/released/".to_owned(),
        prefix => format!("{prefix}//released/"),
    }
}

/// The release marker of the queue entry `entry` (the last segment of its key, `<lease id hex>`
/// or `<lease id hex>_<generation>`) of lock `name`: `<prefix>//released/<name>//<entry>`. Lock
/// names have no empty segment, so the `//` keeps every (name, entry) pair apart.
///
/// ```
/// assert_eq!(distlock_etcd::layout::release_marker("p", "jobs", "694d"), "p//released/jobs//694d");
/// ```
pub fn release_marker(prefix: &str, name: &str, entry: &str) -> String {
    format!("{}{name}//{entry}", release_marker_prefix(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_the_lease_keys_right_under_the_prefix() {
        let prefix = "distlock/jobs/";
        assert!(is_queue_key(prefix, b"distlock/jobs/694d7a1b2c3d"));
        // A lock named below this one, and its own queue.
        assert!(!is_queue_key(prefix, b"distlock/jobs/nightly/694d7a1b2c3d"));
        assert!(!is_queue_key(prefix, b"distlock/jobs/694d/694d7a1b2c3d"));
        // The prefix itself, and keys outside it.
        assert!(!is_queue_key(prefix, b"distlock/jobs/"));
        assert!(!is_queue_key(prefix, b"distlock/jobsx/694d"));
        assert!(!is_queue_key(prefix, b"distlock/other/694d"));
    }

    #[test]
    fn queue_keys_name_their_lock_and_markers_name_none() {
        let root = "p/";
        assert_eq!(lock_of(root, &queue_key(&queue_prefix("p", "a/b"), 0xff, 0)), Some(("a/b", "ff")));
        assert_eq!(lock_of(root, &queue_key(&queue_prefix("p", "a/b"), 0xff, 3)), Some(("a/b", "ff_3")));
        assert_eq!(lock_of(root, "p/a/ff_"), None);
        assert_eq!(lock_of(root, "p/a/ff_x"), None);
        assert_eq!(lock_of(root, &release_marker("p", "a", "ff")), None);
        assert_eq!(lock_of(root, "p/a/not-hex"), None);
        assert_eq!(lock_of(root, "q/a/ff"), None);
        assert_eq!(lock_of("", "a/ff"), Some(("a", "ff")));
    }
}
