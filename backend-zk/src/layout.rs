//! Where distlock's entries live in ZooKeeper, in Apache Curator's layouts, for the backend and
//! for tools that read the same znodes (the test harness, operators' scripts): the queue of
//! `name` is the ephemeral sequential children of `<chroot>/<name>`, named
//! `_c_<uuid>-<marker><seq>` (Curator's protected mode), ordered by sequence number. The marker
//! tells the recipe: `lock-` for a lock (InterProcessMutex, and LeaderSelector, which is built
//! on it), `latch-` for an election (LeaderLatch), `__READ__` and `__WRIT__` for the two sides
//! of a read-write lock (InterProcessReadWriteLock), which queue together; `permits<N>-` for a
//! permit of a semaphore of N permits (distlock's own: see docs/zookeeper.md), whose name also
//! carries its session's id: `_c_<uuid>-<session>-permits<N>-<seq>`. A permit waiter's mailbox is
//! `<chroot>/_distlock-permit-mailboxes/<session>`, which holds each of its permits' doorbell
//! `<uuid>`: a release that admits the permit writes `granted` to it.

use distlock_core::backend::Recipe;

/// The marker Curator puts before the sequence number of a `recipe`'s znodes; a semaphore's
/// permits (distlock's own layout) carry their number: `permits<N>-`.
///
/// ```
/// use std::num::NonZeroU32;
/// use distlock_core::backend::Recipe;
/// assert_eq!(distlock_zk::layout::marker(Recipe::Lock), "lock-");
/// assert_eq!(distlock_zk::layout::marker(Recipe::Election), "latch-");
/// assert_eq!(distlock_zk::layout::marker(Recipe::Read), "__READ__");
/// assert_eq!(distlock_zk::layout::marker(Recipe::Permit(NonZeroU32::new(4).unwrap())), "permits4-");
/// ```
pub fn marker(recipe: Recipe) -> String {
    match recipe {
        Recipe::Election => "latch-".to_owned(),
        Recipe::Read => "__READ__".to_owned(),
        Recipe::Write => "__WRIT__".to_owned(),
        Recipe::Permit(permits) => format!("permits{permits}-"),
        _ => "lock-".to_owned(),
    }
}

/// The recipes whose markers are fixed, by marker.
const FIXED: [(Recipe, &str); 4] =
    [(Recipe::Lock, "lock-"), (Recipe::Election, "latch-"), (Recipe::Read, "__READ__"), (Recipe::Write, "__WRIT__")];

/// The marker and sequence number of a queue znode's name (`..lock-0000000042`), if it is one.
///
/// ```
/// assert_eq!(distlock_zk::layout::sequence("_c_x-latch-0000000042"), Some(("latch-".to_owned(), "0000000042")));
/// assert_eq!(distlock_zk::layout::sequence("nightly"), None);
/// ```
pub fn sequence(child: &str) -> Option<(String, &str)> {
    recipe_and_sequence(child).map(|(recipe, digits)| (marker(recipe), digits))
}

/// The recipe of a queue znode, by its marker.
///
/// ```
/// use std::num::NonZeroU32;
/// use distlock_core::backend::Recipe;
/// use distlock_zk::layout::recipe_of;
/// assert_eq!(recipe_of("_c_x-__WRIT__0000000007"), Some(Recipe::Write));
/// assert_eq!(recipe_of("_c_x-permits3-0000000007"), Some(Recipe::Permit(NonZeroU32::new(3).unwrap())));
/// assert_eq!(recipe_of("_c_x-000000000000001f-permits3-0000000007"), Some(Recipe::Permit(NonZeroU32::new(3).unwrap())));
/// assert_eq!(recipe_of("nightly"), None);
/// ```
pub fn recipe_of(child: &str) -> Option<Recipe> {
    recipe_and_sequence(child).map(|(recipe, _)| recipe)
}

/// Whether a queue znode holds beside others (a reader's, a permit's): its release does not
/// mean it was first.
pub(crate) fn is_shared(child: &str) -> bool {
    recipe_of(child).is_some_and(|recipe| !recipe.is_exclusive())
}

fn recipe_and_sequence(child: &str) -> Option<(Recipe, &str)> {
    let is_sequence = |digits: &str| digits.len() >= 10 && digits.bytes().all(|b| b.is_ascii_digit());
    let fixed = FIXED.into_iter().find_map(|(recipe, marker)| {
        let (_, digits) = child.rsplit_once(marker)?;
        is_sequence(digits).then_some((recipe, digits))
    });
    fixed.or_else(|| {
        // `..-permits<N>-<seq>`
        let (head, digits) = child.rsplit_once('-')?;
        let (_, permits) = head.rsplit_once("-permits")?;
        let permits = permits.parse().ok().filter(|_| permits.bytes().all(|b| b.is_ascii_digit()))?;
        is_sequence(digits).then_some((Recipe::Permit(permits), digits))
    })
}

/// The queue znodes of `recipe`'s queue among `children` (`None`: of every recipe), in queue
/// order: by sequence number, as Curator sorts. A read-write lock's readers and writers are one
/// queue.
///
/// ```
/// use distlock_core::backend::Recipe;
/// let children = vec!["_c_b-lock-0000000012".to_owned(), "_c_a-latch-0000000003".to_owned(), "sub".to_owned()];
/// assert_eq!(distlock_zk::layout::queue_order(children.clone(), Some(Recipe::Lock)), ["_c_b-lock-0000000012"]);
/// assert_eq!(distlock_zk::layout::queue_order(children, None), ["_c_a-latch-0000000003", "_c_b-lock-0000000012"]);
/// ```
pub fn queue_order(mut children: Vec<String>, recipe: Option<Recipe>) -> Vec<String> {
    children.retain(|c| recipe_of(c).is_some_and(|of| recipe.is_none_or(|r| r.shares_queue_with(of))));
    // Each name parsed once, not once per comparison: a queue of 1,000 is sorted on every
    // listing.
    children.sort_by_cached_key(|c| {
        let digits = sequence(c).map(|(_, d)| d.to_owned()).unwrap_or_default();
        (digits.len(), digits)
    });
    children
}

/// The protected-mode prefix of a new znode of `recipe`: `_c_<uuid>-<marker>`, to which the
/// server appends the sequence number.
///
/// ```
/// use distlock_core::backend::Recipe;
/// assert!(distlock_zk::layout::protected_prefix(Recipe::Election).ends_with("-latch-"));
/// ```
pub fn protected_prefix(recipe: Recipe) -> String {
    format!("_c_{}-{}", uuid::Uuid::new_v4(), marker(recipe))
}

/// The protected-mode prefix of a new permit znode: `_c_<uuid>-<session id, 16 hex>-permits<N>-`.
/// The session id names the waiter's mailbox, where its doorbell is ([`permit_doorbell`]).
///
/// ```
/// use std::num::NonZeroU32;
/// let prefix = distlock_zk::layout::permit_prefix(0x1f, NonZeroU32::new(4).unwrap());
/// assert!(prefix.starts_with("_c_") && prefix.ends_with("-000000000000001f-permits4-"));
/// ```
pub fn permit_prefix(session: i64, permits: std::num::NonZeroU32) -> String {
    format!("_c_{}-{:016x}-permits{permits}-", uuid::Uuid::new_v4(), session as u64)
}

/// The session id (16 hex digits) in a permit znode's name, if it carries one ([`permit_prefix`]).
///
/// ```
/// use distlock_zk::layout::permit_session;
/// let child = "_c_0b5c8a3e-4f7d-4a51-9b1e-2f6c3d4e5a6b-000000000000001f-permits4-0000000007";
/// assert_eq!(permit_session(child), Some("000000000000001f"));
/// assert_eq!(permit_session("_c_0b5c8a3e-4f7d-4a51-9b1e-2f6c3d4e5a6b-permits4-0000000007"), None);
/// ```
pub fn permit_session(child: &str) -> Option<&str> {
    let rest = child.strip_prefix("_c_")?;
    let session = rest.get(37..53).filter(|_| rest.as_bytes().get(36) == Some(&b'-'))?;
    let tail = rest.get(53..)?;
    (session.bytes().all(|b| b.is_ascii_hexdigit()) && tail.starts_with("-permits")).then_some(session)
}

/// Where the mailboxes of permit waiters live under the chroot: `<chroot>/_distlock-permit-mailboxes`.
pub const PERMIT_MAILBOXES: &str = "_distlock-permit-mailboxes";

/// The mailbox of the session whose id is `session` (16 hex digits), under `chroot`: a container
/// node whose children are its permits' doorbells, `<uuid>` each, and its keeper `session`.
///
/// ```
/// assert_eq!(distlock_zk::layout::permit_mailbox("/app", "000000000000001f"), "/app/_distlock-permit-mailboxes/000000000000001f");
/// ```
pub fn permit_mailbox(chroot: &str, session: &str) -> String {
    format!("{chroot}/{PERMIT_MAILBOXES}/{session}")
}

/// The doorbell of the permit znode `child` (or of the permit prefix it was created with):
/// `<mailbox>/<uuid>` in its session's mailbox ([`permit_mailbox`]), an ephemeral znode that its
/// queuing creates and a release that admits it writes `granted` to. `None` for a permit znode
/// without a session in its name.
///
/// ```
/// let child = "_c_0b5c8a3e-4f7d-4a51-9b1e-2f6c3d4e5a6b-000000000000001f-permits4-0000000007";
/// assert_eq!(
///     distlock_zk::layout::permit_doorbell("/app", child).as_deref(),
///     Some("/app/_distlock-permit-mailboxes/000000000000001f/0b5c8a3e-4f7d-4a51-9b1e-2f6c3d4e5a6b")
/// );
/// ```
pub fn permit_doorbell(chroot: &str, child: &str) -> Option<String> {
    let session = permit_session(child)?;
    let doorbell = permit_doorbell_name(child)?;
    Some(format!("{}/{doorbell}", permit_mailbox(chroot, session)))
}

/// The name of the doorbell of the permit znode `child` in its session's mailbox: the uuid of
/// its protected prefix. `None` for a permit znode without a session in its name.
///
/// ```
/// let child = "_c_0b5c8a3e-4f7d-4a51-9b1e-2f6c3d4e5a6b-000000000000001f-permits4-0000000007";
/// assert_eq!(distlock_zk::layout::permit_doorbell_name(child), Some("0b5c8a3e-4f7d-4a51-9b1e-2f6c3d4e5a6b"));
/// assert_eq!(distlock_zk::layout::permit_doorbell_name("_c_0b5c8a3e-4f7d-4a51-9b1e-2f6c3d4e5a6b-permits4-0000000007"), None);
/// ```
pub fn permit_doorbell_name(child: &str) -> Option<&str> {
    permit_session(child)?;
    child.get(3..39)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_order_follows_sequence_numbers_and_skips_other_nodes() {
        let children = vec![
            "_c_b-lock-0000000012".to_owned(),
            "unrelated".to_owned(),
            "_c_a-lock-0000000003".to_owned(),
            "lock-0000000007".to_owned(), // another Curator-compatible client
            "_c_c-lock-x".to_owned(),
            "_c_d-latch-0000000005".to_owned(),
        ];
        let locks = queue_order(children.clone(), Some(Recipe::Lock));
        assert_eq!(locks, ["_c_a-lock-0000000003", "lock-0000000007", "_c_b-lock-0000000012"]);
        assert_eq!(queue_order(children.clone(), Some(Recipe::Election)), ["_c_d-latch-0000000005"]);
        let all = queue_order(children, None);
        assert_eq!(all, ["_c_a-lock-0000000003", "_c_d-latch-0000000005", "lock-0000000007", "_c_b-lock-0000000012"]);
    }

    #[test]
    fn readers_and_writers_are_one_queue_apart_from_the_lock() {
        let children = vec![
            "_c_w-__WRIT__0000000004".to_owned(),
            "_c_l-lock-0000000002".to_owned(),
            "_c_r-__READ__0000000003".to_owned(),
            "__READ__0000000005".to_owned(), // a Curator client without protection
        ];
        let expected = ["_c_r-__READ__0000000003", "_c_w-__WRIT__0000000004", "__READ__0000000005"];
        assert_eq!(queue_order(children.clone(), Some(Recipe::Read)), expected);
        assert_eq!(queue_order(children.clone(), Some(Recipe::Write)), expected);
        assert_eq!(queue_order(children, Some(Recipe::Lock)), ["_c_l-lock-0000000002"]);
        assert!(is_shared("_c_r-__READ__0000000003") && !is_shared("_c_w-__WRIT__0000000004"));
        assert!(!is_shared("_c_l-lock-0000000002"));
    }

    #[test]
    fn permits_carry_their_number_and_share_one_queue() {
        let children = vec![
            "_c_b-permits3-0000000012".to_owned(),
            "_c_a-permits2-0000000011".to_owned(),
            "_c_l-lock-0000000010".to_owned(),
            "_c_x-permits-0000000013".to_owned(), // no number: not a permit
            "_c_y-permits3x-0000000014".to_owned(),
        ];
        let three = Recipe::Permit(std::num::NonZeroU32::new(3).unwrap());
        assert_eq!(queue_order(children, Some(three)), ["_c_a-permits2-0000000011", "_c_b-permits3-0000000012"]);
        assert!(is_shared("_c_b-permits3-0000000012"));
    }

    #[test]
    fn sequence_numbers_past_ten_digits_sort_after_shorter_ones() {
        let children = vec!["_c_a-lock-10000000000".to_owned(), "_c_b-lock-9999999999".to_owned()];
        assert_eq!(queue_order(children, None), ["_c_b-lock-9999999999", "_c_a-lock-10000000000"]);
    }
}
